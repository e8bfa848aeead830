//! Where a fan-out through a cluster went: each instance's open WebSockets and messages sent
//! (from its `/metrics`), and each Redis Cluster shard's event channels and `SPUBLISH`es (from
//! `redis-cli`). Only when the tool is given the instances (`EVENTLY_INSTANCE_URLS`) and the
//! shards (`REDIS_CLUSTER_URLS`), as `scripts/bench.sh fanout --via-cluster` does.

use std::time::Duration;

use serde::Serialize;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Instance {
    pub url: String,
    pub live_connections: Option<f64>,
    pub messages_sent: Option<f64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Shard {
    pub address: String,
    /// Event channels with subscribers on this shard (each instance subscribes once per event).
    pub channels: Option<u64>,
    pub spublish_calls: Option<u64>,
}

/// Every instance's figures, read at once.
pub async fn instances(urls: &[String]) -> Vec<Instance> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client");
    futures_util::future::join_all(urls.iter().map(|url| {
        let http = http.clone();
        async move {
            let text = match http.get(format!("{url}/metrics")).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            Instance {
                url: url.clone(),
                live_connections: metric(&text, "evently_live_connections"),
                messages_sent: metric(&text, "evently_ws_messages_sent_total"),
            }
        }
    }))
    .await
}

/// The sum of a metric's samples in a Prometheus exposition (all label sets).
fn metric(exposition: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = exposition
        .lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Every shard's figures; `urls` are `redis://host:port` (REDIS_CLUSTER_URLS).
pub fn shards(urls: &[String]) -> Vec<Shard> {
    urls.iter()
        .map(|url| {
            let address = url
                .trim_start_matches("redis://")
                .trim_end_matches('/')
                .to_owned();
            let (host, port) = address.rsplit_once(':').unwrap_or((&address, "6379"));
            let cli = |args: &[&str]| -> Option<String> {
                let output = std::process::Command::new("redis-cli")
                    .args(["-h", host, "-p", port])
                    .args(args)
                    .output()
                    .ok()?;
                output
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
            };
            Shard {
                channels: cli(&["PUBSUB", "SHARDCHANNELS"])
                    .map(|text| text.lines().filter(|l| !l.trim().is_empty()).count() as u64),
                spublish_calls: cli(&["INFO", "commandstats"]).map(|text| {
                    text.lines()
                        .find_map(|line| line.strip_prefix("cmdstat_spublish:calls="))
                        .and_then(|rest| rest.split(',').next()?.parse().ok())
                        .unwrap_or(0)
                }),
                address,
            }
        })
        .collect()
}

/// `a: x; b: y` for the report.
pub fn describe<T>(items: &[T], line: impl Fn(&T) -> String) -> String {
    items.iter().map(line).collect::<Vec<_>>().join("; ")
}

pub fn figure(value: Option<f64>) -> String {
    value.map_or("?".into(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::metric;

    #[test]
    fn a_metric_is_summed_over_its_label_sets_and_not_confused_with_a_longer_name() {
        let text = "# TYPE x gauge\nevently_live_connections 12\nevently_live_connections_max 99\n\
                    evently_ws_messages_sent_total{kind=\"a\"} 3\nevently_ws_messages_sent_total{kind=\"b\"} 4\n";
        assert_eq!(metric(text, "evently_live_connections"), Some(12.0));
        assert_eq!(metric(text, "evently_ws_messages_sent_total"), Some(7.0));
        assert_eq!(metric(text, "evently_missing"), None);
    }
}
