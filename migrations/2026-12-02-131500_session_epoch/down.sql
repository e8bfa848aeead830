DROP TABLE session_epoch;
