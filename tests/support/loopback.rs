//! What the example-driving tests (`axum_gateway`, `tonic_service`) set up
//! the same way: the in-process emulator, the real SDK client pointed at it,
//! and a listener on a free loopback port for the example's server.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tower_bedrock_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Latency};

/// The emulator answering every call with `output_tokens` tokens, with its
/// default latency (`latency` true) or none.
pub(crate) async fn emulator(output_tokens: u64, latency: bool) -> EmulatorHandle {
    let mut config = EmulatorConfig::builder().output_tokens(output_tokens);
    if latency {
        config = config.latency(Latency::default());
    }
    Emulator::start(config.build().unwrap()).await.unwrap()
}

/// The real SDK client in `region`, talking to `emulator` with fake static
/// credentials.
pub(crate) async fn client(
    emulator: &EmulatorHandle,
    region: &str,
) -> aws_sdk_bedrockruntime::Client {
    tower_bedrock::sdk::BedrockClientBuilder::new()
        .region(region)
        .endpoint_url(emulator.endpoint_url())
        .static_credentials("AKIDEXAMPLE", "not-a-secret")
        .build()
        .await
        .unwrap()
}

/// A listener on a free port of 127.0.0.1, and its address.
pub(crate) async fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}
