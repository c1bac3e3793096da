//! A small-scale scenario through the real SDK against the in-process
//! emulator, asserting only the ordering of the naive retry and the stack:
//! two apps together at twice the RPM quota for three minutes, then quiet.
//!
//! Why the ordering cannot come out otherwise:
//! - the naive retry gives up 15 scenario seconds (plus latencies) after a
//!   call's arrival, so every call it gets answered is admitted by one of
//!   the emulator's fixed windows that meet the first 3.3 minutes: at most
//!   five windows of 20 requests, 100 of the 120 calls; it loses 20 or
//!   more;
//! - the stack's budget admits 20 a minute (the whole quota, counted in
//!   the same wall-clock minutes as the emulator's) and queues the rest:
//!   call k is admitted at the start of minute k / 20 (about 2.5 minutes of
//!   waiting for the longest), under the 5 allowed
//!   (`stack_max_wait_minutes`) and inside the 5 drain minutes; it never
//!   exceeds the quota, so the server sends it no 429.
//!
//! Wall time is compressed (700 ms scenario minutes; the rates are low enough
//! that a debug build on two shared cores keeps up), not paused: the
//! emulator is a real HTTP server on loopback; a few seconds in all.

use tower_bedrock_bench::{ClientOptions, Scenario, Strategy, metrics, run_all};

fn scenario() -> Scenario {
    Scenario::from_toml_str(
        r#"
        name = "small-peak"
        minutes = 3
        window_ms = 700
        drain_minutes = 5
        stack_max_wait_minutes = 5.0
        seed = 7
        [[models]]
        id = "anthropic.claude-3-5-haiku-20241022-v1:0"
        rpm = 20
        tpm = 400000
        [[apps]]
        name = "a"
        rpm = [20]
        [[apps]]
        name = "b"
        rpm = [20]
        "#,
    )
    .expect("valid scenario")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_loses_nothing_where_the_naive_retry_loses_calls() {
    let s = scenario();
    assert_eq!(s.total_calls(), 120);
    assert_eq!(metrics::attainable(&s), 120.0);
    let opts = ClientOptions::default();
    let report = run_all(&s, &[Strategy::Naive, Strategy::Stack], &opts)
        .await
        .expect("runs");
    let (naive, stack) = (&report.runs[0], &report.runs[1]);
    for r in [naive, stack] {
        println!(
            "{}: answered {} lost {} ({:?}) 429s {} p99 {:?}",
            r.strategy.name(),
            r.answered,
            r.lost,
            r.lost_by_reason,
            r.server_429,
            r.p99_s
        );
        assert_eq!(r.calls, 120);
        assert_eq!(r.answered + r.lost, r.calls);
    }
    assert_eq!(stack.lost, 0, "the stack lost {:?}", stack.lost_by_reason);
    assert_eq!(stack.server_429, 0);
    assert!(naive.lost >= 20, "the naive retry lost only {}", naive.lost);
    assert!(stack.goodput > naive.goodput);

    // The ideal schedule: 20 a minute from a queue that grows by 20 a
    // minute for three minutes, so the quota binds; call k (0-based, from
    // 20 on) is admitted at the start of minute k / 20 and arrived at about
    // k / 40: call 100 waits two and a half minutes, p99 (call 101) a
    // little less.
    assert_eq!(report.ideal.served, 120);
    assert!(report.ideal.quota_binds());
    let p99 = report.ideal.p99_s.expect("served");
    assert!((140.0..152.0).contains(&p99), "ideal p99 {p99}");
    // The verdict's goodput and 429 checks follow from the counts above
    // (latencies on a debug build on shared cores are not asserted).
    let verdict = report.verdict.as_ref().expect("a stack and a peer");
    for check in &verdict.checks[..2] {
        assert!(check.pass, "{}: {}", check.name, check.detail);
    }
}
