//! Who may use the emulator's HTTP API: the `Host` rule that defeats DNS
//! rebinding, and the tokens of the dashboard and of `@connections`.
//!
//! The WebSocket endpoint is not behind these rules: like API Gateway's, it is open
//! to any origin, and `$connect` decides (the authorizer).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{OriginalUri, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::http::LocalAddr;
use super::sigv4::{self, Authorization, SignedRequest};
use crate::auth::token_from;
use crate::local::ServeConfig;

/// Whether a request with this `Host` may read or act through the HTTP API: a
/// loopback name or address, the `--listen` address, the address the client
/// actually reached, or a name given with `--allowed-host`. A page on another
/// name that resolves here (DNS rebinding) carries its own name, and is refused.
pub fn host_allowed(host: Option<&str>, listen: SocketAddr, local: Option<SocketAddr>, allowed: &[String]) -> bool {
    let Some(host) = host.map(str::trim).filter(|host| !host.is_empty()) else { return false };
    if is_loopback_host(host) {
        return true;
    }
    let name = host_name(host).to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    if allowed.iter().any(|allowed| allowed.eq_ignore_ascii_case(name)) {
        return true;
    }
    let Some(ip) = host_ip(name) else { return false };
    (!listen.ip().is_unspecified() && ip == listen.ip()) || local.is_some_and(|local| local.ip() == ip)
}

/// Whether a host (`name`, `name:port`, `[::1]:port`) is this machine by its name
/// or address: `localhost`, `*.localhost`, or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let name = host_name(host.trim()).to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    name == "localhost" || name.ends_with(".localhost") || host_ip(name).is_some_and(|ip| ip.is_loopback())
}

/// The address a host name is, if it is one (`[::1]` unbracketed).
pub fn host_ip(name: &str) -> Option<IpAddr> {
    name.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `example.test:8080` → `example.test`; `[::1]:80` → `[::1]`.
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) && !name.contains(':') => name,
        _ => host,
    }
}

/// Compares in time that does not depend on where the strings differ.
pub fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|presented| bool::from(expected.as_bytes().ct_eq(presented.as_bytes())))
}

/// The token a request presents: `?token=`, `Authorization: Bearer ...`, or the
/// access key id of a SigV4 `Authorization` header (whose signature
/// [`require_management_token`] verifies).
pub fn presented_token(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    if let Some(signed) = authorization.and_then(|value| value.strip_prefix("AWS4-HMAC-SHA256 ")) {
        let credential = signed.split(',').find_map(|part| part.trim().strip_prefix("Credential="))?;
        return credential.split('/').next().map(str::to_owned);
    }
    token_from(query.get("token").map(String::as_str), authorization)
}

fn refusal(status: StatusCode, kind: &'static str, message: &'static str) -> Response {
    refused(status, kind, message.to_owned())
}

/// What the HTTP API's rules need of the configuration: who may reach it, and
/// with which management credentials.
#[derive(Debug, Clone)]
pub(crate) struct ExposureRules {
    listen: SocketAddr,
    allowed_hosts: Vec<String>,
    management_token: Option<String>,
    function_credentials: Vec<SigningKey>,
}

impl ExposureRules {
    pub(crate) fn of(config: &ServeConfig) -> Arc<Self> {
        Arc::new(ExposureRules {
            listen: config.listen,
            allowed_hosts: config.allowed_hosts.clone(),
            management_token: config.management_token.clone(),
            function_credentials: config.function_credentials.clone(),
        })
    }
}

/// Middleware of the HTTP API (`/api/*`, `@connections`): the `Host` rule.
pub(crate) async fn require_known_host(
    State(rules): State<Arc<ExposureRules>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok());
    let local = request.extensions().get::<LocalAddr>().map(|local| local.0);
    if !host_allowed(host, rules.listen, local, &rules.allowed_hosts) {
        tracing::debug!(?host, "refused a request for an unknown host");
        return refusal(
            StatusCode::MISDIRECTED_REQUEST,
            "MisdirectedRequest",
            "this server answers only for its own address or a loopback name (see --allowed-host)",
        );
    }
    next.run(request).await
}

/// A key id and its secret that `@connections` accepts in a SigV4 signature: the
/// management token as both, and the functions' own credentials under `--lambda`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub key_id: String,
    pub secret: String,
}

/// The largest signed body `@connections` reads to verify a signature (API
/// Gateway's message limit is 128 KB).
const MAX_SIGNED_BODY: usize = 256 * 1024;

/// Middleware of `@connections`: the management token, when one is configured. A
/// SigV4-signed request (the AWS SDKs and CLI) is verified: its key id must be the
/// token (signed with the token as the secret too) or the functions' key id (signed
/// with their secret), and its signature must match, within 15 minutes.
pub(crate) async fn require_management_token(
    State(rules): State<Arc<ExposureRules>>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &rules.management_token else { return next.run(request).await };
    let (parts, body) = request.into_parts();
    let authorization = parts.headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let Some(signed) = authorization.and_then(Authorization::parse) else {
        let presented = presented_token(&parts.headers, &query);
        if presented.is_none() {
            return refusal(
                StatusCode::UNAUTHORIZED,
                "UnauthorizedException",
                "@connections needs the management token",
            );
        }
        if !token_matches(expected, presented.as_deref()) {
            return refusal(StatusCode::FORBIDDEN, "ForbiddenException", "wrong management token");
        }
        return next.run(Request::from_parts(parts, body)).await;
    };
    let signed = match signed {
        Ok(signed) => signed,
        Err(error) => return refused(StatusCode::FORBIDDEN, "InvalidSignatureException", error.to_string()),
    };
    let secret = if token_matches(expected, Some(signed.key_id)) {
        expected
    } else {
        match rules.function_credentials.iter().find(|key| token_matches(&key.key_id, Some(signed.key_id))) {
            Some(key) => &key.secret,
            None => return refusal(StatusCode::FORBIDDEN, "ForbiddenException", "wrong management token"),
        }
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_SIGNED_BODY).await else {
        return refusal(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLargeException", "the body is too large");
    };
    let path = parts.extensions.get::<OriginalUri>().map_or_else(|| parts.uri.path(), |uri| uri.0.path());
    let signed_request = SignedRequest {
        method: parts.method.as_str(),
        path,
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    if let Err(error) = sigv4::verify(&signed_request, &signed, secret, chrono::Utc::now()) {
        tracing::debug!(%error, "a SigV4 request to @connections was refused");
        return refused(StatusCode::FORBIDDEN, "InvalidSignatureException", error.to_string());
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(body))).await
}

fn refused(status: StatusCode, kind: &'static str, message: String) -> Response {
    let mut response = (status, axum::Json(serde_json::json!({ "message": message }))).into_response();
    response.headers_mut().insert("x-amzn-ErrorType", HeaderValue::from_static(kind));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(host: &str, listen: &str) -> bool {
        host_allowed(Some(host), listen.parse().unwrap(), None, &[])
    }

    #[test]
    fn loopback_names_and_the_listen_address_are_allowed() {
        for host in ["localhost", "localhost:8080", "app.localhost:1", "127.0.0.1:8080", "127.9.9.9", "[::1]:8080"] {
            assert!(allowed(host, "127.0.0.1:8080"), "{host}");
        }
        assert!(allowed("192.168.1.5:8080", "192.168.1.5:8080"));
        assert!(host_allowed(
            Some("10.0.0.7:80"),
            "0.0.0.0:80".parse().unwrap(),
            Some("10.0.0.7:80".parse().unwrap()),
            &[]
        ));
        assert!(host_allowed(
            Some("devbox.internal:80"),
            "0.0.0.0:80".parse().unwrap(),
            None,
            &["devbox.internal".into()]
        ));
    }

    #[test]
    fn other_names_are_refused() {
        for host in ["evil.test", "evil.test:8080", "localhost.evil.test", "10.0.0.7", "", "127.0.0.1.evil.test"] {
            assert!(!allowed(host, "127.0.0.1:8080"), "{host}");
        }
        assert!(!host_allowed(None, "127.0.0.1:8080".parse().unwrap(), None, &[]));
        assert!(!allowed("0.0.0.0:80", "0.0.0.0:80"), "the unspecified address is not a host");
    }

    #[test]
    fn tokens_come_from_the_query_a_bearer_header_or_a_sigv4_access_key() {
        let mut headers = HeaderMap::new();
        let query: HashMap<String, String> = [("token".to_owned(), "q".to_owned())].into();
        assert_eq!(presented_token(&headers, &query).as_deref(), Some("q"));
        headers.insert(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(presented_token(&headers, &HashMap::new()).as_deref(), Some("b"));
        headers.insert(
            header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=s3cret/20261126/us-east-1/execute-api/aws4_request, SignedHeaders=host, \
             Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(presented_token(&headers, &HashMap::new()).as_deref(), Some("s3cret"));
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3cre")));
        assert!(!token_matches("s3cret", None));
    }
}
