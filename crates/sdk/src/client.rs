//! A builder for the `aws-sdk-bedrockruntime` client, configured for the
//! tower-bedrock stack.

use std::time::Duration;

use aws_sdk_bedrockruntime::config::{
    BehaviorVersion, Credentials, Region, SharedCredentialsProvider, SharedHttpClient,
    StalledStreamProtectionConfig,
};
use aws_sdk_bedrockruntime::{Client, Config};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::adapter::LayeredHttpClient;
use crate::cap::ConnectionCapLayer;
use crate::error::ClientBuildError;

/// Default connect timeout: 5 s. Bedrock endpoints answer a TCP/TLS
/// handshake in milliseconds; a connect that takes seconds is a network
/// failure worth retrying elsewhere.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default read timeout: 300 s. It bounds the wait for the response
/// *headers*, which for a non-streaming Converse / InvokeModel arrive only
/// once the whole answer is generated (thousands of output tokens take
/// minutes). The SDK has no default.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(300);
/// Default operation attempt timeout: 330 s (the read timeout plus room to
/// connect and send). With SDK retries disabled there is one attempt per
/// call; the retry layer above makes the others.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(330);
/// Default operation timeout: 360 s (the attempt plus credential
/// resolution and signing). The SDK has no default.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(360);
/// Default hard cap on requests (connections) in flight per host: 128. The
/// SDK's own pool opens as many connections as there are requests in
/// flight; Bedrock answers too many with 503 "Too many connections".
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 128;
/// Default idle timeout of pooled connections: 60 s.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum CredentialSource {
    DefaultChain,
    Provider(SharedCredentialsProvider),
}

/// Builds an `aws_sdk_bedrockruntime::Client` suited to the stack:
///
/// - **SDK retries disabled** (`RetryConfig::disabled()`): retries belong to
///   `QuotaAlignedRetry`, which knows the error classes and the quota
///   windows; SDK retries underneath would multiply attempts and hide
///   throttles from the budget and the breaker;
/// - **timeouts set**: connect ([`DEFAULT_CONNECT_TIMEOUT`]), read
///   ([`DEFAULT_READ_TIMEOUT`]), operation attempt
///   ([`DEFAULT_ATTEMPT_TIMEOUT`]) and operation
///   ([`DEFAULT_OPERATION_TIMEOUT`]); the SDK sets only a connect timeout
///   by default. Event streams are timed per event by
///   [`BedrockService`](crate::BedrockService)'s idle timeout instead, and
///   the SDK's stalled-stream protection (a throughput floor that misfires
///   on a model thinking quietly) is turned off;
/// - **a sized pool with a hard per-host cap**: the hyper client keeps up to
///   `max_connections_per_host` idle connections, and a
///   [`ConnectionCapLayer`] below the SDK (through
///   [`LayeredHttpClient`]) allows at most that many in use: the hyper
///   client itself has no such limit;
/// - region, endpoint override (the emulator, a VPC endpoint) and
///   credentials (the default provider chain of `aws-config`, or a static
///   pair / any provider).
///
/// Build one client per process (per region) and share it: it is cheap to
/// clone and its pool is what the cap protects.
///
/// ```no_run
/// # async fn f() -> Result<(), tower_bedrock_sdk::ClientBuildError> {
/// use std::time::Duration;
/// let client = tower_bedrock_sdk::BedrockClientBuilder::new()
///     .region("us-east-1")
///     .read_timeout(Duration::from_secs(120))
///     .max_connections_per_host(64)
///     .build()
///     .await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BedrockClientBuilder {
    region: Option<String>,
    endpoint_url: Option<String>,
    credentials: CredentialSource,
    connect_timeout: Duration,
    read_timeout: Duration,
    attempt_timeout: Duration,
    operation_timeout: Duration,
    max_connections_per_host: usize,
    pool_idle_timeout: Option<Duration>,
    pool_wait_timeout: Option<Duration>,
    cap_layer: Option<ConnectionCapLayer>,
    http_client: Option<SharedHttpClient>,
}

impl Default for BedrockClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BedrockClientBuilder {
    /// A builder with the defaults above and the default credentials chain.
    pub fn new() -> Self {
        BedrockClientBuilder {
            region: None,
            endpoint_url: None,
            credentials: CredentialSource::DefaultChain,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            pool_wait_timeout: None,
            cap_layer: None,
            http_client: None,
        }
    }

    /// The AWS region (`us-east-1`...). Without it, the default chain's
    /// region (`AWS_REGION`, profile) is used.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Sends every request to this endpoint (`http://127.0.0.1:PORT` for
    /// the emulator, a VPC endpoint...).
    pub fn endpoint_url(mut self, url: impl Into<String>) -> Self {
        self.endpoint_url = Some(url.into());
        self
    }

    /// Uses static credentials instead of the default chain (tests, the
    /// emulator).
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "tower-bedrock-static",
        );
        self.credentials = CredentialSource::Provider(SharedCredentialsProvider::new(creds));
        self
    }

    /// Uses this credentials provider instead of the default chain.
    pub fn credentials_provider(mut self, provider: SharedCredentialsProvider) -> Self {
        self.credentials = CredentialSource::Provider(provider);
        self
    }

    /// TCP (and TLS) connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time to wait for the response headers once the request is sent.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Timeout of one attempt (connect, send, receive the response).
    pub fn operation_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Timeout of the whole operation (credentials, signing, the attempt).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Hard cap on requests in flight per host, also the idle pool size.
    pub fn max_connections_per_host(mut self, cap: usize) -> Self {
        self.max_connections_per_host = cap;
        self
    }

    /// How long an idle pooled connection is kept (`None`: forever).
    pub fn pool_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Fail a request that waited this long for a connection slot (a
    /// connector timeout for the SDK, `Unavailable(Network)` for the
    /// classifier). Without it, the wait is bounded by the attempt timeout.
    pub fn pool_wait_timeout(mut self, timeout: Duration) -> Self {
        self.pool_wait_timeout = Some(timeout);
        self
    }

    /// Uses this connection cap (e.g. one shared by several clients of the
    /// same host, or kept to observe
    /// [`in_use`](ConnectionCapLayer::in_use)) instead of creating one from
    /// `max_connections_per_host` and `pool_wait_timeout`.
    pub fn connection_cap(mut self, layer: ConnectionCapLayer) -> Self {
        self.cap_layer = Some(layer);
        self
    }

    /// Uses this HTTP client as the transport under the connection cap
    /// (instead of [`default_transport`](Self::default_transport)), e.g. a
    /// [`LayeredHttpClient`] with your own tower layers.
    pub fn http_client(mut self, client: SharedHttpClient) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The SDK's hyper client (rustls, aws-lc) with this builder's pool
    /// settings, without the cap: the base to put your own layers on.
    pub fn default_transport(&self) -> SharedHttpClient {
        let mut b = aws_smithy_http_client::Builder::new()
            .pool_max_idle_per_host(self.max_connections_per_host.max(1));
        b.set_pool_idle_timeout(Some(self.pool_idle_timeout));
        b.tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https()
    }

    fn validate(&self) -> Result<(), ClientBuildError> {
        for (name, d) in [
            ("connect", self.connect_timeout),
            ("read", self.read_timeout),
            ("operation attempt", self.attempt_timeout),
            ("operation", self.operation_timeout),
        ] {
            if d.is_zero() {
                return Err(ClientBuildError::ZeroTimeout(name));
            }
        }
        if self.pool_wait_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ClientBuildError::ZeroTimeout("pool wait"));
        }
        if self.attempt_timeout > self.operation_timeout {
            return Err(ClientBuildError::AttemptLongerThanOperation {
                attempt: self.attempt_timeout,
                operation: self.operation_timeout,
            });
        }
        if self.max_connections_per_host == 0 {
            return Err(ClientBuildError::ZeroConnections);
        }
        if let Some(url) = &self.endpoint_url {
            let ok = url.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
            });
            if !ok {
                return Err(ClientBuildError::BadEndpoint(url.clone()));
            }
        }
        Ok(())
    }

    /// The timeouts this builder sets.
    pub fn timeout_config(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .operation_attempt_timeout(self.attempt_timeout)
            .operation_timeout(self.operation_timeout)
            .build()
    }

    /// Validates and builds the client's configuration (loading the default
    /// credentials chain and region when needed).
    pub async fn build_config(self) -> Result<Config, ClientBuildError> {
        self.validate()?;
        let cap = match &self.cap_layer {
            Some(l) => l.clone(),
            None => ConnectionCapLayer::with_wait_timeout(
                self.max_connections_per_host,
                self.pool_wait_timeout,
            )
            .ok_or(ClientBuildError::ZeroConnections)?,
        };
        let base = self
            .http_client
            .clone()
            .unwrap_or_else(|| self.default_transport());
        let http_client = SharedHttpClient::new(LayeredHttpClient::new(base, cap));

        let mut builder = match &self.credentials {
            CredentialSource::Provider(p) => {
                let region = self.region.clone().ok_or(ClientBuildError::MissingRegion)?;
                Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region))
                    .credentials_provider(p.clone())
            }
            CredentialSource::DefaultChain => {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(r) = &self.region {
                    loader = loader.region(Region::new(r.clone()));
                }
                let sdk = loader.load().await;
                if sdk.region().is_none() {
                    return Err(ClientBuildError::MissingRegion);
                }
                if sdk.credentials_provider().is_none() {
                    return Err(ClientBuildError::MissingCredentials);
                }
                aws_sdk_bedrockruntime::config::Builder::from(&sdk)
            }
        };
        builder = builder
            .retry_config(RetryConfig::disabled())
            .timeout_config(self.timeout_config())
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .http_client(http_client);
        if let Some(url) = &self.endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        Ok(builder.build())
    }

    /// Validates and builds the client.
    pub async fn build(self) -> Result<Client, ClientBuildError> {
        Ok(Client::from_conf(self.build_config().await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> BedrockClientBuilder {
        BedrockClientBuilder::new()
            .region("us-east-1")
            .static_credentials("AKID", "SECRET")
    }

    #[tokio::test]
    async fn bad_configurations_fail_at_build() {
        let e = b()
            .connect_timeout(Duration::ZERO)
            .build()
            .await
            .unwrap_err();
        assert_eq!(e, ClientBuildError::ZeroTimeout("connect"));
        let e = b().max_connections_per_host(0).build().await.unwrap_err();
        assert_eq!(e, ClientBuildError::ZeroConnections);
        let e = b()
            .operation_attempt_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(5))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(
            e,
            ClientBuildError::AttemptLongerThanOperation { .. }
        ));
        let e = b().endpoint_url("localhost:80").build().await.unwrap_err();
        assert_eq!(e, ClientBuildError::BadEndpoint("localhost:80".into()));
        let e = b()
            .pool_wait_timeout(Duration::ZERO)
            .build()
            .await
            .unwrap_err();
        assert_eq!(e, ClientBuildError::ZeroTimeout("pool wait"));
        let e = BedrockClientBuilder::new()
            .static_credentials("a", "b")
            .build()
            .await
            .unwrap_err();
        assert_eq!(e, ClientBuildError::MissingRegion);
    }

    #[tokio::test]
    async fn config_has_retries_off_and_timeouts_on() {
        let conf = b()
            .endpoint_url("http://127.0.0.1:9")
            .build_config()
            .await
            .unwrap();
        assert_eq!(conf.retry_config().unwrap().max_attempts(), 1);
        let t = conf.timeout_config().unwrap();
        assert_eq!(t.connect_timeout(), Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(t.read_timeout(), Some(DEFAULT_READ_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(DEFAULT_ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(DEFAULT_OPERATION_TIMEOUT));
        assert_eq!(conf.region().unwrap().as_ref(), "us-east-1");
        assert!(conf.http_client().is_some());
        assert!(!conf.stalled_stream_protection().unwrap().is_enabled());
    }
}
