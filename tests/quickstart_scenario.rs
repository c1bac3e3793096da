//! The quickstart's scenario at a smaller scale (1 s scenario minutes, 40 %
//! of the traffic and quotas), through the real SDK against the in-process
//! emulator: the stack's column must show fewer 429s seen by the server and
//! more successes than the naive retry's.
//!
//! Wall time is compressed, not paused (the emulator is a real HTTP server
//! on loopback); the margins asserted are wide (the naive client is
//! throttled by the RPM quota every peak minute and fails every call of
//! the overload stretch; the stack admits below the quota and falls back).

#[path = "../examples/common/scenario.rs"]
mod scenario;

use scenario::{Client, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_beats_the_naive_retry_on_the_quickstart_scenario() {
    let s = Scenario::small();
    let naive = scenario::run(&s, Client::Naive).await;
    let stack = scenario::run(&s, Client::Stack).await;
    println!("{}", scenario::table(&s, &naive, &stack));

    assert_eq!(naive.calls, stack.calls);
    assert!(
        stack.server_429 < naive.server_429,
        "429s: stack {} vs naive {}",
        stack.server_429,
        naive.server_429
    );
    assert!(
        stack.successes > naive.successes,
        "successes: stack {} vs naive {}",
        stack.successes,
        naive.successes
    );
    // The overload stretch was served by the fallback model, and the
    // naive client, which has none, lost calls to it.
    assert!(stack.fallbacks > 0);
    assert!(naive.failures.iter().any(|(class, _)| class == "throttled"));
    // The stack lost (almost) nothing, the naive retry lost more, and the
    // stack got there with fewer requests to Bedrock.
    assert!(
        stack.failed() * 100 <= stack.calls,
        "stack lost {} of {} calls: {:?}",
        stack.failed(),
        stack.calls,
        stack.failures
    );
    assert!(
        naive.failed() > stack.failed(),
        "failures: naive {:?} vs stack {:?}",
        naive.failures,
        stack.failures
    );
    assert!(
        stack.server_requests < naive.server_requests,
        "requests sent: stack {} vs naive {}",
        stack.server_requests,
        naive.server_requests
    );
}
