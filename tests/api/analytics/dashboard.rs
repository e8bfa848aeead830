//! `/dashboard` in headless Chromium: an organizer signs in, picks an event, and sees the
//! counters and the chart move when someone books from another client.

use base64::Engine as _;
use evently::db::models::Role;
use serde_json::json;

use super::sql;
use crate::support::TestApp;
use crate::support::browser::with_page;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_an_events_figures_moving_as_someone_books() {
    let app = TestApp::spawn().await;
    let organizer = app
        .register(
            "dash-organizer@example.com",
            "dashboard pass 123",
            "Dana Organizer",
        )
        .await;
    sql(
        &app,
        &format!(
            "UPDATE users SET role = 'ORGANIZER' WHERE id = '{}'",
            organizer.id
        ),
    )
    .await
    .unwrap();
    let event = app.event(&organizer, 40).await;
    let buyer = app.user(Role::User).await;
    app.book(&buyer, &event, 2).await;

    let page = app.get("/dashboard").await.text().await.unwrap();
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "nothing from elsewhere"
    );

    let shot = std::env::temp_dir().join(format!("evently-dashboard-{}.png", uuid::Uuid::new_v4()));
    let screenshot = shot.clone();
    with_page(&app.base_url, "/dashboard", async |page| {
        page.wait_for(
            "the sign-in form, its script loaded",
            // The form is in the page before its script has run: a click then would submit it
            // as a plain form and navigate away.
            "document.documentElement?.dataset.ready === 'true'",
            |v| v == &json!(true),
        )
        .await?;
        page.eval(
            "document.getElementById('email').value = 'dash-organizer@example.com';
             document.getElementById('password').value = 'dashboard pass 123';
             document.getElementById('signin-button').click(); true",
        )
        .await?;
        // A sign-in error shows as the last value when this times out.
        let option = format!(
            "!!document.querySelector('#events option[value=\"{event}\"]') \
             || document.getElementById('signin-error').textContent"
        );
        page.wait_for("the organizer's event in the list", &option, |v| {
            v == &json!(true)
        })
        .await?;
        page.eval(&format!(
            "const s = document.getElementById('events'); s.value = '{event}';
             s.dispatchEvent(new Event('change')); true"
        ))
        .await?;
        let sold = "document.getElementById('sold').textContent";
        page.wait_for("the figures", sold, |v| v == &json!("2"))
            .await?;
        let live = "document.getElementById('status').textContent";
        page.wait_for("the live subscription", live, |v| v == &json!("live"))
            .await?;
        let total = "document.getElementById('chart').dataset.total";
        page.wait_for("the chart", total, |v| v == &json!("2"))
            .await?;

        // Someone books from another client: the counters and the chart follow.
        app.book(&buyer, &event, 3).await;
        page.wait_for("the counters to move", sold, |v| v == &json!("5"))
            .await?;
        page.wait_for(
            "the available seats",
            "document.getElementById('available').textContent",
            |v| v == &json!("35"),
        )
        .await?;
        page.wait_for("the chart to move", total, |v| v == &json!("5"))
            .await?;

        let png = page
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().unwrap_or_default())?;
        std::fs::write(&screenshot, bytes)?;
        Ok(())
    })
    .await
    .expect("the dashboard works in Chromium");
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 1000, "a screenshot of {size} bytes");
    eprintln!("dashboard screenshot: {}", shot.display());
}
