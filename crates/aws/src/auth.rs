//! Verifying Cognito JWTs: the authorizer's logic, with no Lambda types, so the
//! `authorizer` Lambda and `wsledger serve --auth jwt` share it.
//!
//! A token is accepted when it is an RS256 JWT signed by a key of the user pool's
//! JWKS, unexpired, from the pool's issuer, a Cognito `id` or `access` token, and
//! (when an app client id is configured) issued to that client.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use tokio::sync::RwLock;

use crate::domain::UserId;
use crate::https_get::HttpsGet;
use crate::metrics::{Metrics, names};
use crate::trust_roots::TrustRoots;

/// A JWKS is fetched again for an unknown key id at most this often (key rotation).
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Clock skew tolerated on `exp`.
const LEEWAY_SECONDS: u64 = 30;

/// The token of a request, by one rule for every entry point (the authorizer, the
/// emulator's `$connect`, its dashboard and `@connections`): a non-empty `token`
/// query parameter (browsers cannot set headers on a WebSocket), else the
/// `Authorization` header without its `Bearer ` prefix (any case), trimmed.
pub fn token_from(query_token: Option<&str>, authorization: Option<&str>) -> Option<String> {
    if let Some(token) = query_token.map(str::trim).filter(|token| !token.is_empty()) {
        return Some(token.to_owned());
    }
    let header = authorization?.trim_start();
    let token = match header.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => &header[7..],
        _ => header,
    };
    let token = token.trim();
    Some(token.to_owned()).filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case("bearer"))
}

/// Where the signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// `https://cognito-idp.{region}.amazonaws.com/{user pool id}`.
    pub issuer: String,
    /// When set, the token must have been issued to this app client.
    pub client_id: Option<String>,
    pub jwks: JwksSource,
}

impl AuthConfig {
    /// The configuration of a Cognito user pool; the region is the pool id's prefix
    /// (`us-east-1_AbC123` is in `us-east-1`). The JWKS is the pool's own.
    pub fn cognito(user_pool_id: &str, client_id: Option<String>) -> Result<Self, String> {
        let Some((region, _)) =
            user_pool_id.split_once('_').filter(|(region, id)| !region.is_empty() && !id.is_empty())
        else {
            return Err(format!("USER_POOL_ID {user_pool_id:?} is not a Cognito user pool id (region_id)"));
        };
        let issuer = format!("https://cognito-idp.{region}.amazonaws.com/{user_pool_id}");
        let jwks = JwksSource::Url(format!("{issuer}/.well-known/jwks.json"));
        Ok(Self { issuer, client_id, jwks })
    }

    /// From `USER_POOL_ID` and, optionally, `USER_POOL_CLIENT_ID`, `JWKS_URL` or
    /// `JWKS_FILE` (to use other keys than the pool's, for example offline), as
    /// `lookup` finds them (`settings::auth_config` reads them from the process).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let read = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let user_pool_id = read("USER_POOL_ID").ok_or("USER_POOL_ID is not set")?;
        let mut config = Self::cognito(&user_pool_id, read("USER_POOL_CLIENT_ID"))?;
        if let Some(url) = read("JWKS_URL") {
            config.jwks = JwksSource::Url(url);
        }
        if let Some(file) = read("JWKS_FILE") {
            config.jwks = JwksSource::File(PathBuf::from(file));
        }
        Ok(config)
    }
}

/// Why a token was refused. The messages are for logs, never for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    MissingToken,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not allowed")]
    Algorithm(String),
    #[error("no key {0:?} in the JWKS")]
    UnknownKey(String),
    #[error("invalid token: expired: {0}")]
    Expired(String),
    #[error("invalid token: bad signature: {0}")]
    BadSignature(String),
    #[error("invalid token: wrong issuer: {0}")]
    WrongIssuer(String),
    #[error("invalid token: {0}")]
    WrongAudience(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the signing keys are unavailable: {0}")]
    Keys(String),
}

impl AuthError {
    /// The `Reason` dimension of the `Denied` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed(_) => "malformed",
            AuthError::Algorithm(_) => "algorithm",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::Expired(_) => "expired",
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::WrongIssuer(_) => "wrong_issuer",
            AuthError::WrongAudience(_) => "wrong_audience",
            AuthError::Invalid(_) => "invalid",
            AuthError::Keys(_) => "keys_unavailable",
        }
    }
}

fn decode_error(error: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    let message = error.to_string();
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired(message),
        ErrorKind::InvalidSignature => AuthError::BadSignature(message),
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer(message),
        _ => AuthError::Invalid(message),
    }
}

/// The claims wsledger reads. Signature, `exp` and `iss` are checked by the decoder.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    token_use: Option<String>,
    aud: Option<String>,
    client_id: Option<String>,
}

struct CachedKeys {
    keys: JwkSet,
    fetched_at: Instant,
}

/// The key cache: the last keys fetched, and the last failure to fetch them.
#[derive(Default)]
struct KeyState {
    cached: Option<CachedKeys>,
    failed: Option<(Instant, String)>,
}

impl KeyState {
    fn fetched_at(&self) -> Option<Instant> {
        self.cached.as_ref().map(|cached| cached.fetched_at)
    }

    /// What the cache alone answers for `kid`, if it can: the key; unknown (the
    /// keys are fresh, so fetching again would not help); or refused at once (a
    /// fetch failed within `backoff`).
    fn answer(&self, kid: &str, backoff: Duration) -> Option<Result<DecodingKey, AuthError>> {
        if let Some(cached) = &self.cached {
            if let Some(jwk) = cached.keys.find(kid) {
                return Some(DecodingKey::from_jwk(jwk).map_err(|error| AuthError::Keys(error.to_string())));
            }
            if cached.fetched_at.elapsed() < JWKS_REFRESH_INTERVAL {
                return Some(Err(AuthError::UnknownKey(kid.to_owned())));
            }
        }
        match &self.failed {
            Some((at, error)) if at.elapsed() < backoff => {
                Some(Err(AuthError::Keys(format!("{error} (not fetching again for {backoff:?})"))))
            }
            _ => None,
        }
    }
}

/// Where the verifier reads the JWKS document: the configured URL or file
/// ([`JwtVerifier::new`]), or anything a test supplies
/// ([`JwtVerifier::with_key_source`]). The verifier owns caching, single flight and
/// back-off; a source only fetches.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// The JWKS document, as text.
    async fn fetch(&self) -> Result<String, AuthError>;
}

/// The configured [`JwksSource`]: an HTTP GET (2 s to connect, 5 s in all) or a
/// file. The HTTP client (and its root certificates) is built at the first fetch
/// of a URL, never for a file.
struct ConfiguredKeys {
    source: JwksSource,
    roots: TrustRoots,
    http: std::sync::OnceLock<Result<HttpsGet, String>>,
}

impl ConfiguredKeys {
    fn new(source: JwksSource, roots: TrustRoots) -> Self {
        Self { source, roots, http: std::sync::OnceLock::new() }
    }

    fn http(&self) -> Result<&HttpsGet, AuthError> {
        self.http
            .get_or_init(|| HttpsGet::new(crate::https_get::root_store(self.roots)))
            .as_ref()
            .map_err(|error| AuthError::Keys(error.clone()))
    }
}

#[async_trait::async_trait]
impl KeySource for ConfiguredKeys {
    async fn fetch(&self) -> Result<String, AuthError> {
        match &self.source {
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|error| AuthError::Keys(format!("{}: {error}", path.display()))),
            JwksSource::Url(url) => {
                self.http()?.get(url).await.map_err(|error| AuthError::Keys(format!("{url}: {error}")))
            }
        }
    }
}

/// After a failed fetch, requests are answered from the cached keys (or refused)
/// for this long before the keys are fetched again.
pub const JWKS_FAILURE_BACKOFF: Duration = Duration::from_secs(30);

/// Verifies tokens against a cached JWKS. Build once per process.
///
/// One fetch at a time (single flight): concurrent requests that need the keys
/// wait for the one fetch under way and then read its result. A failed fetch is
/// remembered for [`JWKS_FAILURE_BACKOFF`], during which requests are answered from
/// the cache or refused at once, so an outage of the key endpoint costs one fetch
/// per back-off period, not one per request.
pub struct JwtVerifier {
    config: AuthConfig,
    source: std::sync::Arc<dyn KeySource>,
    keys: RwLock<KeyState>,
    fetching: tokio::sync::Mutex<()>,
    failure_backoff: Duration,
    metrics: std::sync::Arc<Metrics>,
}

impl JwtVerifier {
    pub fn new(config: AuthConfig) -> Self {
        let source = std::sync::Arc::new(ConfiguredKeys::new(config.jwks.clone(), TrustRoots::System));
        Self {
            config,
            source,
            keys: RwLock::new(KeyState::default()),
            fetching: tokio::sync::Mutex::new(()),
            failure_backoff: JWKS_FAILURE_BACKOFF,
            metrics: std::sync::Arc::default(),
        }
    }

    /// Counts fetches and their failures into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Fetches the configured URL trusting `roots` (the platform's store unless set).
    pub fn with_trust_roots(mut self, roots: TrustRoots) -> Self {
        self.source = std::sync::Arc::new(ConfiguredKeys::new(self.config.jwks.clone(), roots));
        self
    }

    /// Reads the keys from `source` instead of the configured URL or file.
    pub fn with_key_source(mut self, source: std::sync::Arc<dyn KeySource>) -> Self {
        self.source = source;
        self
    }

    /// Another back-off after a failed fetch than [`JWKS_FAILURE_BACKOFF`].
    pub fn with_failure_backoff(mut self, backoff: Duration) -> Self {
        self.failure_backoff = backoff;
        self
    }

    pub fn metrics(&self) -> &std::sync::Arc<Metrics> {
        &self.metrics
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    async fn fetch_keys(&self) -> Result<JwkSet, AuthError> {
        let text = self.source.fetch().await?;
        serde_json::from_str(&text).map_err(|error| AuthError::Keys(format!("not a JWKS: {error}")))
    }

    /// Fetches the keys, one fetch at a time, unless one that finished after
    /// `seen` (the cache's `fetched_at` when the caller looked) already answers.
    async fn refresh(&self, seen: Option<Instant>) -> Result<(), AuthError> {
        let _single_flight = self.fetching.lock().await;
        {
            let state = self.keys.read().await;
            if state.fetched_at() != seen {
                return Ok(());
            }
            if let Some((at, error)) = &state.failed
                && at.elapsed() < self.failure_backoff
            {
                return Err(AuthError::Keys(error.clone()));
            }
        }
        self.metrics.add(names::JWKS_FETCHES, 1);
        match self.fetch_keys().await {
            Ok(keys) => {
                let mut state = self.keys.write().await;
                state.cached = Some(CachedKeys { keys, fetched_at: Instant::now() });
                state.failed = None;
                Ok(())
            }
            Err(error) => {
                self.metrics.add(names::JWKS_FETCH_FAILURES, 1);
                tracing::error!(%error, "fetching the signing keys failed");
                self.keys.write().await.failed = Some((Instant::now(), error.to_string()));
                Err(error)
            }
        }
    }

    /// Loads the keys now (during init), so the first request does not wait for
    /// them. A failure is remembered like any other: requests are refused at once
    /// during the back-off, and the first one after it fetches again.
    pub async fn warm_up(&self) -> Result<(), AuthError> {
        let seen = self.keys.read().await.fetched_at();
        self.refresh(seen).await
    }

    async fn decoding_key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let seen = {
            let state = self.keys.read().await;
            if let Some(answer) = state.answer(kid, self.failure_backoff) {
                return answer;
            }
            state.fetched_at()
        };
        self.refresh(seen).await?;
        let state = self.keys.read().await;
        match state.cached.as_ref().and_then(|cached| cached.keys.find(kid)) {
            Some(jwk) => DecodingKey::from_jwk(jwk).map_err(|error| AuthError::Keys(error.to_string())),
            None => Err(AuthError::UnknownKey(kid.to_owned())),
        }
    }

    /// The user a token proves, or why it proves nothing.
    pub async fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        let header = decode_header(token).map_err(|error| AuthError::Malformed(error.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| AuthError::Malformed("no kid in the header".into()))?;
        let key = self.decoding_key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECONDS;
        let claims = decode::<Claims>(token, &key, &validation).map_err(decode_error)?.claims;
        let audience = match claims.token_use.as_deref() {
            Some("id") => claims.aud,
            Some("access") => claims.client_id,
            other => return Err(AuthError::Invalid(format!("token_use {other:?} is neither id nor access"))),
        };
        if let Some(client_id) = &self.config.client_id
            && audience.as_deref() != Some(client_id.as_str())
        {
            return Err(AuthError::WrongAudience(format!("issued to {audience:?}, not to app client {client_id}")));
        }
        UserId::parse(claims.sub).map_err(|error| AuthError::Invalid(error.to_string()))
    }
}

#[cfg(test)]
mod token_tests {
    use super::token_from;

    #[test]
    fn one_rule_for_where_a_token_comes_from() {
        assert_eq!(token_from(Some("q"), Some("Bearer h")).as_deref(), Some("q"));
        assert_eq!(token_from(Some(" "), Some("Bearer h")).as_deref(), Some("h"), "an empty ?token= falls back");
        assert_eq!(token_from(None, Some("bearer  h ")).as_deref(), Some("h"));
        assert_eq!(token_from(None, Some("BEARER h")).as_deref(), Some("h"));
        assert_eq!(token_from(None, Some("h")).as_deref(), Some("h"), "a bare header value");
        assert_eq!(token_from(None, Some("Bearer ")), None);
        assert_eq!(token_from(None, None), None);
    }
}

#[cfg(test)]
mod key_cache_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    /// Counts fetches; each takes `delay` and answers `answer`.
    struct CountingKeys {
        fetches: AtomicUsize,
        delay: Duration,
        answer: Result<&'static str, &'static str>,
    }

    #[async_trait::async_trait]
    impl KeySource for CountingKeys {
        async fn fetch(&self) -> Result<String, AuthError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.answer.map(str::to_owned).map_err(|error| AuthError::Keys(error.to_owned()))
        }
    }

    fn verifier(answer: Result<&'static str, &'static str>) -> (Arc<JwtVerifier>, Arc<CountingKeys>) {
        let keys = Arc::new(CountingKeys { fetches: AtomicUsize::new(0), delay: Duration::from_millis(50), answer });
        let config = AuthConfig::cognito("us-east-1_Test", None).unwrap();
        let verifier =
            JwtVerifier::new(config).with_key_source(keys.clone()).with_failure_backoff(Duration::from_secs(60));
        (Arc::new(verifier), keys)
    }

    /// A token whose header names key `kid` (its signature is never reached).
    fn token(kid: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#));
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"user-1"}"#);
        format!("{header}.{claims}.c2lnbmF0dXJl")
    }

    async fn verify_concurrently(verifier: &Arc<JwtVerifier>, count: usize) -> Vec<AuthError> {
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let verifier = verifier.clone();
                tokio::spawn(async move { verifier.verify(&token("k1")).await })
            })
            .collect();
        let mut errors = Vec::new();
        for task in tasks {
            errors.push(task.await.unwrap().expect_err("no key can verify these tokens"));
        }
        errors
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch() {
        let (verifier, keys) = verifier(Ok(r#"{"keys":[]}"#));
        let errors = verify_concurrently(&verifier, 50).await;
        assert_eq!(keys.fetches.load(Ordering::SeqCst), 1, "single flight");
        assert!(errors.iter().all(|error| matches!(error, AuthError::UnknownKey(kid) if kid == "k1")), "{errors:?}");
        // Fresh keys answer an unknown kid without fetching again.
        verifier.verify(&token("k1")).await.unwrap_err();
        assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_remembered_for_the_back_off() {
        let (verifier, keys) = verifier(Err("HTTP 503"));
        assert!(verifier.warm_up().await.is_err());
        let errors = verify_concurrently(&verifier, 20).await;
        assert_eq!(keys.fetches.load(Ordering::SeqCst), 1, "one fetch per back-off period, not one per request");
        assert!(errors.iter().all(|error| matches!(error, AuthError::Keys(text) if text.contains("HTTP 503"))));
        assert_eq!(verifier.metrics().total(names::JWKS_FETCH_FAILURES), 1);
    }

    #[tokio::test]
    async fn a_document_that_is_not_a_jwks_is_a_key_error() {
        let (verifier, _) = verifier(Ok("<html>"));
        assert!(matches!(verifier.warm_up().await, Err(AuthError::Keys(text)) if text.starts_with("not a JWKS")));
    }
}
