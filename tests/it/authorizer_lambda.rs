//! The real `authorizer` bootstrap against keys and a JWKS the tests generate,
//! served from a loopback HTTP server (or a file).

use std::net::SocketAddr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::process::Child;

use crate::lambda_runtime_api::{Outcome, RuntimeApi};

pub const USER_POOL_ID: &str = "us-east-1_TestPool1";
const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool1";
pub const CLIENT_ID: &str = "4f2a7c1e9b3d5a6c8e0f1a2b3c";
pub const METHOD_ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123defg/prod/$connect";

pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    pub jwk: Value,
}

impl SigningKey {
    pub fn generate(kid: &str) -> Self {
        let key_pair = KeyPair::generate(KeySize::Rsa2048).expect("an RSA key");
        let der = key_pair.as_der().expect("PKCS#8 DER");
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            STANDARD
                .encode(der.as_ref())
                .as_bytes()
                .chunks(64)
                .map(|line| std::str::from_utf8(line).unwrap())
                .collect::<Vec<_>>()
                .join("\n")
        );
        let public = key_pair.public_key();
        let jwk = json!({
            "kty": "RSA",
            "kid": kid,
            "alg": "RS256",
            "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        });
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("jsonwebtoken reads the key");
        Self { kid: kid.to_owned(), encoding, jwk }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.encoding).expect("a signed token")
    }
}

pub fn claims(overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut claims = json!({
        "sub": "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17",
        "iss": ISSUER,
        "aud": CLIENT_ID,
        "token_use": "id",
        "auth_time": now - 10,
        "iat": now - 10,
        "exp": now + 3_600,
        "cognito:username": "alice",
    });
    for (name, value) in overrides.as_object().unwrap() {
        claims[name] = value.clone();
    }
    claims
}

pub async fn serve_jwks(jwks: Value) -> SocketAddr {
    let app = Router::new().route("/.well-known/jwks.json", get(move || async move { axum::Json(jwks.clone()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

struct Authorizer {
    runtime: RuntimeApi,
    _process: Child,
}

impl Authorizer {
    async fn start(jwks_env: (&str, String)) -> Self {
        let runtime = RuntimeApi::start().await;
        let process = runtime.spawn(
            &wsledger_testkit::bootstrap_bin("authorizer"),
            &[
                ("USER_POOL_ID", USER_POOL_ID.to_owned()),
                ("USER_POOL_CLIENT_ID", CLIENT_ID.to_owned()),
                (jwks_env.0, jwks_env.1),
            ],
        );
        Self { runtime, _process: process }
    }

    async fn authorize(&self, query_token: Option<&str>, header_token: Option<&str>) -> Value {
        let mut event = json!({
            "type": "REQUEST",
            "methodArn": METHOD_ARN,
            "headers": { "Host": "abc123defg.execute-api.us-east-1.amazonaws.com", "Sec-WebSocket-Version": "13" },
            "multiValueHeaders": {},
            "queryStringParameters": {},
            "multiValueQueryStringParameters": {},
            "stageVariables": {},
            "requestContext": {
                "routeKey": "$connect",
                "eventType": "CONNECT",
                "extendedRequestId": "B1xq5FKeIAMFbXw=",
                "requestTime": "24/Nov/2025:16:00:00 +0000",
                "messageDirection": "IN",
                "stage": "prod",
                "connectedAt": 1764000000000i64,
                "requestTimeEpoch": 1764000000004i64,
                "identity": { "sourceIp": "203.0.113.7" },
                "requestId": "B1xq5FKeIAMFbXw=",
                "domainName": "abc123defg.execute-api.us-east-1.amazonaws.com",
                "connectionId": "B1xq5cFJIAMCL-g=",
                "apiId": "abc123defg"
            }
        });
        if let Some(token) = query_token {
            event["queryStringParameters"] = json!({ "token": token });
            event["multiValueQueryStringParameters"] = json!({ "token": [token] });
        }
        if let Some(token) = header_token {
            event["headers"]["Authorization"] = json!(format!("Bearer {token}"));
        }
        match self.runtime.invoke(event).await {
            Outcome::Response(response) => response,
            Outcome::Error(error) => panic!("the authorizer failed: {error}"),
        }
    }
}

fn effect(response: &Value) -> &str {
    response["policyDocument"]["Statement"][0]["Effect"].as_str().unwrap_or("missing")
}

#[tokio::test]
async fn the_authorizer_matrix() {
    let key = SigningKey::generate("test-key-1");
    let stranger = SigningKey::generate("test-key-1");
    let address = serve_jwks(json!({ "keys": [key.jwk.clone()] })).await;
    let authorizer = Authorizer::start(("JWKS_URL", format!("http://{address}/.well-known/jwks.json"))).await;

    let valid = key.sign(&claims(json!({})));
    let allowed = authorizer.authorize(Some(&valid), None).await;
    assert_eq!(effect(&allowed), "Allow", "{allowed}");
    assert_eq!(allowed["principalId"], "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17");
    assert_eq!(allowed["context"]["userId"], "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17");
    assert_eq!(allowed["policyDocument"]["Statement"][0]["Resource"][0], METHOD_ARN);
    assert_eq!(allowed["policyDocument"]["Statement"][0]["Action"][0], "execute-api:Invoke");

    let header_only = authorizer.authorize(None, Some(&valid)).await;
    assert_eq!(effect(&header_only), "Allow", "an Authorization header works too");
    let access = key.sign(&claims(json!({ "token_use": "access", "client_id": CLIENT_ID, "aud": null })));
    assert_eq!(effect(&authorizer.authorize(Some(&access), None).await), "Allow", "a Cognito access token");

    let now = chrono::Utc::now().timestamp();
    let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let none_payload = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let refused = [
        ("expired", key.sign(&claims(json!({ "exp": now - 3_600, "iat": now - 7_200 })))),
        (
            "wrong issuer",
            key.sign(&claims(json!({ "iss": "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other" }))),
        ),
        ("wrong audience", key.sign(&claims(json!({ "aud": "some-other-client" })))),
        ("access token for another client", key.sign(&claims(json!({ "token_use": "access", "client_id": "x" })))),
        ("refresh-like token_use", key.sign(&claims(json!({ "token_use": "refresh" })))),
        ("bad signature", stranger.sign(&claims(json!({})))),
        ("alg none", format!("{none_header}.{none_payload}.")),
        ("unknown key", SigningKey::generate("test-key-2").sign(&claims(json!({})))),
        ("malformed", "not.a.jwt".to_owned()),
        ("garbage", "%%%".to_owned()),
    ];
    for (case, token) in refused {
        let response = authorizer.authorize(Some(&token), None).await;
        assert_eq!(effect(&response), "Deny", "{case}: {response}");
        assert!(response["context"].get("userId").is_none(), "{case}: no user on a Deny");
    }
    let missing = authorizer.authorize(None, None).await;
    assert_eq!(effect(&missing), "Deny", "missing token");
    let empty = authorizer.authorize(Some(""), None).await;
    assert_eq!(effect(&empty), "Deny", "empty token");
}

#[tokio::test]
async fn keys_can_come_from_a_file() {
    let key = SigningKey::generate("file-key");
    let dir = std::env::temp_dir().join(format!("wsledger-jwks-{}", ulid::Ulid::generate()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("jwks.json");
    std::fs::write(&file, json!({ "keys": [key.jwk.clone()] }).to_string()).unwrap();
    let authorizer = Authorizer::start(("JWKS_FILE", file.display().to_string())).await;
    let response = authorizer.authorize(Some(&key.sign(&claims(json!({})))), None).await;
    assert_eq!(effect(&response), "Allow", "{response}");
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn each_refusal_has_its_reason() {
    use wsledger::auth::{AuthConfig, AuthError, JwksSource, JwtVerifier};

    let key = SigningKey::generate("reason-key");
    let address = serve_jwks(json!({ "keys": [key.jwk.clone()] })).await;
    let mut config = AuthConfig::cognito(USER_POOL_ID, Some(CLIENT_ID.to_owned())).unwrap();
    assert_eq!(config.issuer, ISSUER);
    config.jwks = JwksSource::Url(format!("http://{address}/.well-known/jwks.json"));
    let verifier = JwtVerifier::new(config);
    let now = chrono::Utc::now().timestamp();
    let reason = |result: Result<_, AuthError>| result.unwrap_err().to_string();

    assert_eq!(
        verifier.verify(&key.sign(&claims(json!({})))).await.unwrap().as_str(),
        "3f1c2a9e-7b64-4d2e-9a51-0c8e6f4b2d17"
    );
    assert!(
        reason(verifier.verify(&key.sign(&claims(json!({ "exp": now - 3_600 })))).await).contains("ExpiredSignature")
    );
    assert!(
        reason(verifier.verify(&key.sign(&claims(json!({ "iss": "https://evil" })))).await).contains("InvalidIssuer")
    );
    assert!(reason(verifier.verify(&key.sign(&claims(json!({ "aud": "x" })))).await).contains("not to app client"));
    assert!(
        reason(verifier.verify(&SigningKey::generate("reason-key").sign(&claims(json!({})))).await)
            .contains("InvalidSignature")
    );
    assert_eq!(verifier.verify("").await, Err(AuthError::MissingToken));
    assert!(matches!(verifier.verify("a.b.c").await, Err(AuthError::Malformed(_))));
    let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(b"{}"));
    assert!(matches!(verifier.verify(&none).await, Err(AuthError::Malformed(_) | AuthError::Algorithm(_))));
    let hs256 = encode(
        &Header { kid: Some("reason-key".into()), ..Header::new(Algorithm::HS256) },
        &claims(json!({})),
        &EncodingKey::from_secret(b"the modulus is public"),
    )
    .unwrap();
    assert_eq!(verifier.verify(&hs256).await, Err(AuthError::Algorithm("HS256".into())));
    assert!(AuthConfig::cognito("nounderscore", None).is_err());
}
