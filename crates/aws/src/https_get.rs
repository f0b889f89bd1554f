//! One HTTPS (or plain HTTP) GET of a small document, for the authorizer's JWKS:
//! hyper with rustls on aws-lc, the stack the AWS SDK clients of the bootstraps
//! already carry, so the authorizer needs no second HTTP client (and none of its
//! dependencies). Bounded: 2 s to connect, 5 s in all, 1 MiB of body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

use crate::trust_roots::TrustRoots;

/// The largest document fetched.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for [`HttpsGet::get`]; build once, reuse.
#[derive(Clone)]
pub struct HttpsGet {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

/// The certificates `roots` stands for: Amazon's compiled-in roots, or the
/// platform's store (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured).
pub fn root_store(roots: TrustRoots) -> RootCertStore {
    let mut store = RootCertStore::empty();
    match roots {
        TrustRoots::Amazon => {
            for der in TrustRoots::amazon_der() {
                let _ = store.add(CertificateDer::from(der));
            }
        }
        TrustRoots::Mozilla => {
            for der in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
                let _ = store.add(der.clone());
            }
        }
        TrustRoots::System => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::debug!(%error, "a certificate of the platform's store could not be read");
            }
            for certificate in found.certs {
                let _ = store.add(certificate);
            }
        }
    }
    store
}

/// An HTTPS connector trusting `roots` that also speaks plain HTTP, with a 2 s
/// connect timeout: the one connector of the clients outside the SDK.
pub fn connector(roots: RootCertStore) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS configuration: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

impl HttpsGet {
    /// A client trusting `roots` (HTTPS), which also speaks plain HTTP (a JWKS on
    /// this machine, in tests and with `serve`).
    pub fn new(roots: RootCertStore) -> Result<Self, String> {
        Ok(HttpsGet { client: Client::builder(TokioExecutor::new()).build(connector(roots)?) })
    }

    /// The body of `url` as text, when it answers 2xx within the bounds.
    pub async fn get(&self, url: &str) -> Result<String, String> {
        let uri: hyper::Uri = url.parse().map_err(|error| format!("not a URL: {error}"))?;
        let fetch = async {
            let response = self.client.get(uri).await.map_err(|error| error.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|error| format!("reading the body: {error}"))?;
            String::from_utf8(body.to_bytes().to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
        };
        tokio::time::timeout(TOTAL_TIMEOUT, fetch).await.map_err(|_| format!("no answer within {TOTAL_TIMEOUT:?}"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TLS server on loopback with a certificate made for `localhost`, answering
    /// each request with `body`; its certificate.
    async fn tls_server(body: &'static str) -> (String, CertificateDer<'static>) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let certificate = certified.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::try_from(certified.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    let mut request = vec![0u8; 4096];
                    let _ = tls.read(&mut request).await;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (format!("https://localhost:{port}/.well-known/jwks.json"), certificate)
    }

    #[tokio::test]
    async fn a_document_comes_over_real_tls_from_a_trusted_server_only() {
        let (url, certificate) = tls_server(r#"{"keys":[]}"#).await;
        let mut trusted = RootCertStore::empty();
        trusted.add(certificate).unwrap();
        assert_eq!(HttpsGet::new(trusted).unwrap().get(&url).await.unwrap(), r#"{"keys":[]}"#);
        // Amazon's roots do not vouch for this server: refused, not fetched.
        let amazon = HttpsGet::new(root_store(TrustRoots::Amazon)).unwrap();
        assert!(amazon.get(&url).await.is_err());
        assert!(!root_store(TrustRoots::Amazon).is_empty());
    }
}
