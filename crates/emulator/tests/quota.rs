//! The quota model through the real SDK: TPM reservations and settlement,
//! window refresh, burndown, per-profile quotas, RPM, day quota, the
//! connection cap and quota changes through the admin API.
//!
//! Window tests run with a frozen quota clock moved by the test, so no
//! outcome depends on when a wall-clock window happens to turn; the one
//! test on real time only relies on a full window having passed after
//! sleeping a full window.

mod common;

use std::time::Duration;

use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::ProvideErrorMetadata;
use aws_sdk_bedrockruntime::operation::RequestId;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use common::*;
use tower_bedrock_emulator::{EmulatorConfig, EmulatorHandle, Latency, Quota, messages};

/// Input "hi" is 1 token; answers are 48 tokens.
async fn call(c: &Client, model: &str, max: i32) -> Result<(), ConverseError> {
    c.converse()
        .model_id(model)
        .messages(user("hi"))
        .inference_config(max_tokens(max))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.into_service_error())
}

/// Sequential calls until the first refusal: how many were admitted, and
/// the refusal.
async fn admitted_until_refused(c: &Client, model: &str, max: i32) -> (u32, ConverseError) {
    for n in 0..1000 {
        if let Err(e) = call(c, model, max).await {
            return (n, e);
        }
    }
    panic!("never throttled")
}

fn frozen(tpm: u64) -> EmulatorConfig {
    EmulatorConfig::builder()
        .default_quota(Quota::tokens(tpm))
        .frozen_clock(true)
        .build()
        .unwrap()
}

fn assert_throttled(e: &ConverseError, message: &str) {
    assert!(matches!(e, ConverseError::ThrottlingException(_)), "{e:?}");
    assert_eq!(e.message(), Some(message));
    assert_eq!(e.code(), Some("ThrottlingException"));
    assert!(e.request_id().is_some());
}

#[tokio::test]
async fn a_burst_over_tpm_gets_too_many_tokens_until_the_window_refreshes() {
    let emu = start(frozen(1000)).await;
    let c = client(&emu);
    // Reservation 1 + 100 = 101; settled cost 1 + 48 = 49:
    // admitted while 49 k + 101 <= 1000, i.e. k = 0..=18.
    let (n, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_eq!(n, 19);
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    let err = c
        .converse()
        .model_id(NOVA)
        .messages(user("hi"))
        .inference_config(max_tokens(100))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 429);
    assert_eq!(emu.usage(NOVA).used, 19 * 49);
    // The next window opens: admitted again.
    emu.advance_clock(Duration::from_millis(emu.usage(NOVA).next_window_in_ms));
    assert_eq!(emu.usage(NOVA).used, 0);
    call(&c, NOVA, 100).await.expect("new window");
    let n = emu.counters();
    assert_eq!((n.admitted, n.throttled_tokens), (20, 2));
    emu.shutdown().await;
}

#[tokio::test]
async fn large_max_tokens_reservations_throttle_earlier() {
    let emu = start(frozen(1000)).await;
    let c = client(&emu);
    let (big, e) = admitted_until_refused(&c, NOVA, 800).await;
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    let (small, _) = admitted_until_refused(&c, "amazon.nova-micro-v1:0", 50).await;
    // 49 k + 801 <= 1000 => k <= 4; 49 k + 51 <= 1000 => k <= 19.
    assert_eq!((big, small), (5, 20));
    emu.shutdown().await;
}

#[tokio::test]
async fn claude_4_output_burns_down_five_times() {
    let emu = start(frozen(1000)).await;
    let c = client(&emu);
    // Reservation 1 + 100 x 5 = 501, settled 1 + 48 x 5 = 241.
    let (n, e) = admitted_until_refused(&c, SONNET4, 100).await;
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    assert_eq!(n, 3);
    assert_eq!(emu.usage(SONNET4).used, 3 * 241);
    // The same quota on a Claude 3 model lasts much longer.
    let (n3, _) = admitted_until_refused(&c, HAIKU3, 100).await;
    assert_eq!(n3, 19);
    emu.shutdown().await;
}

#[tokio::test]
async fn an_inference_profile_has_a_quota_of_its_own() {
    let emu = start(frozen(300)).await;
    let c = client(&emu);
    let profile = format!("us.{NOVA}");
    let (n, _) = admitted_until_refused(&c, &profile, 100).await;
    assert_eq!(n, 5);
    call(&c, NOVA, 100).await.expect("base model untouched");
    call(&c, &format!("eu.{NOVA}"), 100)
        .await
        .expect("other profile untouched");
    // The profile's ARN is the same key as the profile id.
    let arn = format!("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{NOVA}");
    let e = call(&c, &arn, 100).await.expect_err("same bucket");
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    emu.shutdown().await;
}

#[tokio::test]
async fn reservations_in_flight_count_until_the_stream_ends() {
    // Streams wait 60 s for their first token: their reservations stay.
    let config = EmulatorConfig::builder()
        .default_quota(Quota::tokens(1000))
        .frozen_clock(true)
        .latency(Latency {
            time_to_first_token_ms: 60_000,
            per_token_ms: 0.0,
            scale: 1.0,
        })
        .build()
        .unwrap();
    let emu = start(config).await;
    let c = client(&emu);
    let tries = (0..10).map(|_| {
        c.converse_stream()
            .model_id(NOVA)
            .messages(user("hi"))
            .inference_config(max_tokens(300))
            .send()
    });
    let results = futures_util::future::join_all(tries).await;
    let (ok, refused): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    // 301 each: three fit in 1000.
    assert_eq!((ok.len(), refused.len()), (3, 7));
    for r in refused {
        let e = r.unwrap_err().into_service_error();
        assert!(
            matches!(e, ConverseStreamError::ThrottlingException(_)),
            "{e:?}"
        );
        assert_eq!(e.message(), Some(messages::TOO_MANY_TOKENS));
    }
    assert_eq!(emu.usage(NOVA).reserved, 903);
    assert_eq!(emu.counters().in_flight, 3);
    // Dropping the streams releases the reservations (input charged).
    drop(ok);
    wait_until(&emu, |e| e.usage(NOVA).reserved == 0).await;
    assert_eq!(emu.usage(NOVA).used, 3);
    assert_eq!(emu.counters().in_flight, 0);
    emu.shutdown().await;
}

/// Waits for a condition the emulator reaches asynchronously (a dropped
/// connection noticed by the server); fails after 10 s.
async fn wait_until(emu: &EmulatorHandle, cond: impl Fn(&EmulatorHandle) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond(emu) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_window_refreshes_in_real_time() {
    let config = EmulatorConfig::builder()
        .default_quota(Quota::tokens(200))
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let emu = start(config).await;
    let c = client(&emu);
    let (_, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    // A whole window later, the window has turned whatever the phase.
    tokio::time::sleep(Duration::from_secs(1)).await;
    call(&c, NOVA, 100).await.expect("refreshed");
    emu.shutdown().await;
}

#[tokio::test]
async fn rpm_and_the_day_quota() {
    let config = EmulatorConfig::builder()
        .default_quota(Quota::tokens(100_000).with_rpm(3).with_tpd(350))
        .frozen_clock(true)
        .build()
        .unwrap();
    let emu = start(config).await;
    let c = client(&emu);
    let (n, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_eq!(n, 3);
    assert_throttled(&e, messages::TOO_MANY_REQUESTS);
    assert_eq!(emu.counters().throttled_requests, 1);
    // Next minute: RPM refreshed, 3 x 49 = 147 used today; three more fit
    // in the day, then RPM again.
    emu.advance_clock(Duration::from_secs(60));
    let (n, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_eq!(n, 3);
    assert_throttled(&e, messages::TOO_MANY_REQUESTS);
    // 294 used today: 294 + 101 > 350.
    emu.advance_clock(Duration::from_secs(60));
    let (n, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_eq!(n, 0);
    assert_throttled(&e, messages::TOO_MANY_TOKENS_PER_DAY);
    assert_eq!(emu.counters().throttled_day, 1);
    emu.advance_clock(Duration::from_secs(86_400));
    call(&c, NOVA, 100).await.expect("a new day");
    emu.shutdown().await;
}

#[tokio::test]
async fn quotas_change_at_run_time_through_the_admin_api() {
    let emu = start(frozen(1_000_000)).await;
    let c = client(&emu);
    call(&c, NOVA, 100).await.unwrap();
    let r = admin(
        &emu,
        "PUT",
        "/quotas",
        &format!(r#"{{"models":{{"{NOVA}":{{"tpm":200}}}}}}"#),
    )
    .await;
    assert_eq!(r.status, 204);
    // 49 used: 49 + 101 and 98 + 101 fit in 200, 147 + 101 does not.
    let (n, e) = admitted_until_refused(&c, NOVA, 100).await;
    assert_eq!(n, 2);
    assert_throttled(&e, messages::TOO_MANY_TOKENS);
    let r = admin(
        &emu,
        "GET",
        &format!("/usage/{}", NOVA.replace(':', "%3A")),
        "",
    )
    .await;
    assert_eq!(r.json()["used"], 147);
    let r = admin(&emu, "GET", "/counters", "").await;
    assert_eq!(r.json()["throttled_tokens"], 1);
    assert_eq!(r.json()["admitted"], 3);
    // Invalid updates are refused with 400 and change nothing.
    let r = admin(&emu, "PUT", "/quotas", r#"{"default":{"tpm":0}}"#).await;
    assert_eq!(r.status, 400);
    let r = admin(&emu, "PUT", "/quotas", r#"{"nonsense":1}"#).await;
    assert_eq!(r.status, 400);
    // The clock through the admin API; then a reset restores the startup
    // quota and zeroes the counters.
    let r = admin(&emu, "POST", "/clock", r#"{"advance_ms":60000}"#).await;
    assert_eq!(r.status, 204);
    call(&c, NOVA, 100).await.expect("next window");
    let r = admin(&emu, "GET", "/usage", "").await;
    assert_eq!(r.json()[NOVA]["used"], 49);
    // A shorter window at run time (the frozen clock is on a boundary of
    // every window length, so the current window is fresh).
    let r = admin(&emu, "PUT", "/quotas", r#"{"window_ms":1000}"#).await;
    assert_eq!(r.status, 204);
    assert_eq!(emu.usage(NOVA).next_window_in_ms, 1000);
    let r = admin(
        &emu,
        "PUT",
        "/latency",
        r#"{"time_to_first_token_ms":0,"per_token_ms":0.0,"scale":-1.0}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = admin(&emu, "POST", "/reset", "").await;
    assert_eq!(r.status, 204);
    assert_eq!(emu.counters().admitted, 0);
    assert_eq!(emu.usage(NOVA).next_window_in_ms, 60_000);
    for _ in 0..5 {
        call(&c, NOVA, 100).await.expect("startup quota back");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn the_connection_cap_answers_too_many_connections() {
    let config = EmulatorConfig::builder()
        .max_connections(2)
        .latency(Latency {
            time_to_first_token_ms: 60_000,
            per_token_ms: 0.0,
            scale: 1.0,
        })
        .build()
        .unwrap();
    let emu = start(config).await;
    let c = client(&emu);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            c.converse_stream()
                .model_id(NOVA)
                .messages(user("hi"))
                .send()
                .await
                .expect("within the cap"),
        );
    }
    let err = c
        .converse()
        .model_id(NOVA)
        .messages(user("hi"))
        .send()
        .await
        .expect_err("over the cap");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    let e = err.into_service_error();
    assert!(
        matches!(e, ConverseError::ServiceUnavailableException(_)),
        "{e:?}"
    );
    assert_eq!(e.message(), Some(messages::TOO_MANY_CONNECTIONS));
    assert_eq!(emu.counters().connection_cap, 1);
    drop(held);
    wait_until(&emu, |e| e.counters().in_flight == 0).await;
    // The latency applies to the non-streaming call too: make it instant.
    emu.set_latency(Latency::default()).unwrap();
    call(&c, NOVA, 100).await.expect("slots free again");
    // Through the admin API: lift the cap.
    let r = admin(
        &emu,
        "PUT",
        "/max-connections",
        r#"{"max_connections":null}"#,
    )
    .await;
    assert_eq!(r.status, 204);
    emu.shutdown().await;
}
