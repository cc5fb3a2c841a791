//! Push authentication fixtures: keys made by `openssl` at test time (none committed), a JWKS endpoint.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An RSA key pair made with the system's `openssl`: the private key for signing, the JWK to publish.
pub struct TestKey {
    pub kid: String,
    der: Vec<u8>,
    pub jwk: Value,
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl");
    child.stdin.take().expect("stdin").write_all(input).expect("write");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        let pem = openssl(&["genrsa", "-traditional", "2048"], b"");
        let der = openssl(&["rsa", "-traditional", "-outform", "DER"], &pem);
        let modulus = String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], &pem)).expect("utf8");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": "AQAB"});
        Self { kid: kid.into(), der, jwk }
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs with this key but names `kid` (a forged or mislabelled token).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_rsa_der(&self.der)).expect("sign")
    }
}

/// A JWKS endpoint on loopback serving whatever key set the test puts in it, counting fetches.
pub struct Jwks {
    pub url: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub fetches: Arc<Mutex<usize>>,
}

impl Jwks {
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/oauth2/v3/certs", listener.local_addr().expect("addr"));
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(Mutex::new(0));
        let (k, f) = (Arc::clone(&keys), Arc::clone(&fetches));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (k, f) = (Arc::clone(&k), Arc::clone(&f));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    *f.lock().expect("lock") += 1;
                    let body = json!({"keys": *k.lock().expect("lock")}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self { url, keys, fetches }
    }
}
