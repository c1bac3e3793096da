//! A small-scale scenario through the real SDK against the in-process
//! emulator, asserting only the ordering of the naive retry and the stack:
//! two apps at twice the RPM quota for two minutes, then quiet. The stack's
//! budget queues the excess and serves it after the peak (no call lost, no
//! 429); the seed's naive retry gives up on calls throttled five times.
//!
//! Wall time is compressed (500 ms scenario minutes), not paused: the
//! emulator is a real HTTP server on loopback. The margins are wide: the
//! naive client faces twice the quota with 15 scenario seconds of
//! backoff in all, and the stack's longest queue wait (about 2.1 minutes)
//! is well under its 3-minute maximum wait.

use tower_bedrock_bench::{ClientOptions, Scenario, Strategy, metrics, run};

fn scenario() -> Scenario {
    Scenario::from_toml_str(
        r#"
        name = "small-peak"
        minutes = 4
        window_ms = 500
        drain_minutes = 3
        seed = 7
        [[models]]
        id = "anthropic.claude-3-5-haiku-20241022-v1:0"
        rpm = 60
        tpm = 400000
        [[apps]]
        name = "a"
        rpm = [60, 60, 0]
        [[apps]]
        name = "b"
        rpm = [60, 60, 0]
        "#,
    )
    .expect("valid scenario")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_loses_nothing_where_the_naive_retry_loses_calls() {
    let s = scenario();
    assert_eq!(s.total_calls(), 240);
    assert_eq!(metrics::attainable(&s), 240.0);
    let opts = ClientOptions::default();
    let naive = run(&s, Strategy::Naive, &opts).await.expect("naive run");
    let stack = run(&s, Strategy::Stack, &opts).await.expect("stack run");
    for r in [&naive, &stack] {
        println!(
            "{}: answered {} lost {} ({:?}) 429s {} p99 {:?}",
            r.strategy.name(),
            r.answered,
            r.lost,
            r.lost_by_reason,
            r.server_429,
            r.p99_s
        );
        assert_eq!(r.calls, 240);
        assert_eq!(r.answered + r.lost, r.calls);
    }
    assert_eq!(stack.lost, 0, "the stack lost {:?}", stack.lost_by_reason);
    assert!(naive.lost > 0, "the naive retry lost nothing");
    assert!(stack.server_429 < naive.server_429);
    assert!(stack.goodput > naive.goodput);
}
