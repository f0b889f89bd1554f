//! Which root certificates an HTTPS client trusts: a leaf that the AWS clients
//! (`adapters::aws`) and the JWKS fetch (`auth`) both use, so neither imports the
//! other.

/// Which root certificates an HTTPS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrustRoots {
    /// The platform's store (`/etc/ssl/certs`, or `SSL_CERT_FILE` and `SSL_CERT_DIR`):
    /// what the machine trusts, a company's TLS-inspecting proxy included. The CLI's.
    #[default]
    System,
    /// The roots of Amazon Trust Services (Amazon Root CA 1 to 4 and Starfield
    /// Services Root CA G2), compiled in: every AWS service endpoint chains to them.
    /// The Lambda bootstraps' for AWS endpoints (`settings::lambda_trust_roots`):
    /// reading and parsing the platform's store, or all of Mozilla's 140-odd roots,
    /// cost 3 to 5 ms of every cold start (BENCHMARKS.md); five roots cost 0.1 ms.
    Amazon,
    /// Mozilla's roots (`webpki-root-certs`), compiled in: for endpoints on any host
    /// (the presence webhook) from a Lambda bootstrap, where the platform's store
    /// would be read at every cold start. Loaded only when such a client is built.
    Mozilla,
}

/// Whether `name` occurs in `der`; compares a window only where its first byte matches.
fn contains(der: &[u8], name: &[u8]) -> bool {
    let Some((&first, _)) = name.split_first() else { return true };
    der.windows(name.len()).any(|window| window[0] == first && window == name)
}

/// How Amazon Trust Services' roots name themselves.
const AMAZON_ROOT_NAMES: [&[u8]; 2] = [b"Amazon Root CA ", b"Starfield Services Root Certificate Authority - G2"];

impl TrustRoots {
    /// [`TrustRoots::Amazon`]'s certificates, DER, from Mozilla's root program
    /// (`webpki-root-certs`).
    /// Chosen once per process (a scan of the 140-odd certificates) and kept.
    pub fn amazon_der() -> impl Iterator<Item = &'static [u8]> {
        static AMAZON: std::sync::OnceLock<Vec<&'static [u8]>> = std::sync::OnceLock::new();
        AMAZON
            .get_or_init(|| {
                webpki_root_certs::TLS_SERVER_ROOT_CERTS
                    .iter()
                    .map(|der| der.as_ref())
                    .filter(|der| AMAZON_ROOT_NAMES.iter().any(|name| contains(der, name)))
                    .collect()
            })
            .iter()
            .copied()
    }

    /// The same, PEM-encoded, for clients that take PEM.
    pub fn amazon_pem() -> impl Iterator<Item = String> {
        use base64::Engine;
        Self::amazon_der().map(|der| {
            let body = base64::engine::general_purpose::STANDARD.encode(der);
            let lines: Vec<&str> =
                body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).unwrap_or("")).collect();
            format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
        })
    }

    /// Whether `host` is an AWS service endpoint (its certificate chains to Amazon's roots).
    pub fn is_aws_host(host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn") || host.ends_with(".api.aws")
    }
}
