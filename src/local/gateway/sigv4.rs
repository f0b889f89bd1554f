//! Verifying AWS Signature Version 4 on `@connections`, so that a key id alone is
//! not a credential: the AWS SDKs and CLI sign with the access key id *and* the
//! secret, and the request is accepted only when the signature computed here with
//! the secret `serve` expects for that key id is the one sent, and the request is
//! at most 15 minutes old.
//!
//! Pure: the caller hands over the request's parts and the secret.

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How far a request's `X-Amz-Date` may be from now (AWS's own window).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);

/// What a request presents in its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub key_id: &'a str,
    /// `DATE/REGION/SERVICE/aws4_request`.
    pub scope: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Why a signed request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    #[error("the Authorization header is not a valid AWS4-HMAC-SHA256 signature: {0}")]
    Malformed(&'static str),
    #[error("the request's X-Amz-Date is more than 15 minutes from now")]
    Expired,
    #[error("the signature does not match")]
    Mismatch,
}

/// The parts of a request the signature covers.
#[derive(Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded).
    pub path: &'a str,
    /// The query string as sent, without `?`.
    pub query: &'a str,
    pub headers: &'a axum::http::HeaderMap,
    pub body: &'a [u8],
}

impl<'a> Authorization<'a> {
    /// Reads `AWS4-HMAC-SHA256 Credential=KEY/SCOPE, SignedHeaders=a;b, Signature=HEX`;
    /// `None` when the header is not a SigV4 one.
    pub fn parse(header: &'a str) -> Option<Result<Self, SigV4Error>> {
        let rest = header.strip_prefix("AWS4-HMAC-SHA256 ")?;
        let field = |name: &str| rest.split(',').find_map(|part| part.trim().strip_prefix(name));
        let parsed = (|| {
            let credential = field("Credential=").ok_or(SigV4Error::Malformed("no Credential"))?;
            let (key_id, scope) = credential.split_once('/').ok_or(SigV4Error::Malformed("no credential scope"))?;
            let signed_headers: Vec<&str> =
                field("SignedHeaders=").ok_or(SigV4Error::Malformed("no SignedHeaders"))?.split(';').collect();
            let signature = field("Signature=").ok_or(SigV4Error::Malformed("no Signature"))?;
            if key_id.is_empty() || scope.split('/').count() != 4 || !scope.ends_with("/aws4_request") {
                return Err(SigV4Error::Malformed("a credential scope is DATE/REGION/SERVICE/aws4_request"));
            }
            if signature.len() != 64 || !signature.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                return Err(SigV4Error::Malformed("a signature is 64 hex digits"));
            }
            Ok(Authorization { key_id, scope, signed_headers, signature })
        })();
        Some(parsed)
    }
}

/// Checks `request`, signed as `authorization` says, against `secret` at `now`.
pub fn verify(
    request: &SignedRequest<'_>,
    authorization: &Authorization<'_>,
    secret: &str,
    now: DateTime<Utc>,
) -> Result<(), SigV4Error> {
    let amz_date = header(request.headers, "x-amz-date").ok_or(SigV4Error::Malformed("no X-Amz-Date"))?;
    let signed_at = NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| SigV4Error::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?
        .and_utc();
    if (now - signed_at).abs() > MAX_SKEW {
        return Err(SigV4Error::Expired);
    }
    let date = &amz_date[..8];
    if !authorization.scope.starts_with(date) {
        return Err(SigV4Error::Malformed("the credential scope's date is not the request's"));
    }
    if !authorization.signed_headers.contains(&"host") {
        return Err(SigV4Error::Malformed("the Host header is not signed"));
    }
    let canonical = canonical_request(request, &authorization.signed_headers)?;
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{}\n{}",
        authorization.scope,
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in authorization.scope.split('/') {
        key = hmac(&key, part.as_bytes());
    }
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if bool::from(expected.as_bytes().ct_eq(authorization.signature.to_ascii_lowercase().as_bytes())) {
        Ok(())
    } else {
        Err(SigV4Error::Mismatch)
    }
}

fn header<'h>(headers: &'h axum::http::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// SigV4's canonical request (services other than S3: the path encoded again).
fn canonical_request(request: &SignedRequest<'_>, signed_headers: &[&str]) -> Result<String, SigV4Error> {
    let mut query: Vec<(String, String)> = request
        .query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (encode(&decode(key), false), encode(&decode(value), false))
        })
        .collect();
    query.sort();
    let query: Vec<String> = query.into_iter().map(|(key, value)| format!("{key}={value}")).collect();
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(*name)
            .iter()
            .map(|value| value.to_str().map(|text| text.split_whitespace().collect::<Vec<_>>().join(" ")))
            .collect::<Result<_, _>>()
            .map_err(|_| SigV4Error::Malformed("a signed header is not text"))?;
        if values.is_empty() {
            return Err(SigV4Error::Malformed("a signed header is missing"));
        }
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let payload = match header(request.headers, "x-amz-content-sha256") {
        Some(hash) => hash.to_owned(),
        None => hex(&Sha256::digest(request.body)),
    };
    let path = if request.path.is_empty() { "/" } else { request.path };
    Ok(format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload}",
        request.method,
        encode(path, true),
        query.join("&"),
        signed_headers.join(";")
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// SigV4's URI encoding: every byte but `A-Za-z0-9-_.~` (and `/` in a path) as `%XX`.
fn encode(text: &str, path: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if path => out.push('/'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%' && index + 2 < bytes.len())
            .then(|| u8::from_str_radix(std::str::from_utf8(&bytes[index + 1..index + 3]).ok()?, 16).ok())
            .flatten();
        match escaped {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's documented example (the "get-vanilla-query-order-key-case" request of
    /// the SigV4 test suite): key AKIDEXAMPLE, secret
    /// wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY, service "service", us-east-1.
    #[test]
    fn the_aws_test_suite_example_verifies_and_a_changed_byte_does_not() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let header = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500";
        let authorization = Authorization::parse(header).unwrap().unwrap();
        assert_eq!(authorization.key_id, "AKIDEXAMPLE");
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &headers,
            body: b"",
        };
        let now = DateTime::parse_from_rfc3339("2015-08-30T12:40:00Z").unwrap().to_utc();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&request, &authorization, secret, now), Ok(()));
        assert_eq!(verify(&request, &authorization, "another secret", now), Err(SigV4Error::Mismatch));
        let tampered = SignedRequest { query: "Param2=value2&Param1=value0", ..request };
        assert_eq!(verify(&tampered, &authorization, secret, now), Err(SigV4Error::Mismatch));
        let later = now + TimeDelta::minutes(20);
        assert_eq!(verify(&request, &authorization, secret, later), Err(SigV4Error::Expired));
    }

    #[test]
    fn malformed_headers_are_named() {
        assert!(Authorization::parse("Bearer x").is_none());
        for header in [
            "AWS4-HMAC-SHA256 Credential=KEY, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=KEY/20150830/us-east-1/service/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA256 SignedHeaders=host",
        ] {
            assert!(matches!(Authorization::parse(header), Some(Err(SigV4Error::Malformed(_)))), "{header}");
        }
    }
}
