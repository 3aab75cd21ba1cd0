//! Run with: cargo run -p switchyard --example https_to_http
//!
//! The http-proxy-3 README's "HTTPS → HTTP": the proxy serves TLS (HTTP/1.1
//! and HTTP/2 by ALPN) on 127.0.0.1:8443 with a certificate made at start,
//! and forwards in plain HTTP to a target on 127.0.0.1:9000. The CA is
//! written to `switchyard-example-ca.pem` in the temp directory:
//!
//! ```text
//! curl --cacert /tmp/switchyard-example-ca.pem https://localhost:8443/hello
//! ```
//!
//! `PROXY_ADDR` and `TARGET_ADDR` override the addresses.

use std::net::SocketAddr;

use switchyard::{ListenOptions, Proxy, TlsConfig};

#[path = "support/mod.rs"]
mod support;
use support::{env_addr, pki, target_server};

/// Where the example's servers ended up.
#[derive(Debug)]
pub struct Running {
    /// The proxy's (TLS) address.
    pub proxy: SocketAddr,
    /// The running proxy; dropping it stops the proxy.
    pub server: switchyard::Server,
    /// The plain-HTTP target's address.
    pub target: SocketAddr,
    /// The CA that signed the proxy's certificate (PEM).
    pub ca_pem: String,
}

/// Starts the target and a TLS proxy in front of it.
///
/// # Errors
///
/// When an address cannot be bound or the certificate cannot be made.
pub async fn start(
    proxy_addr: &str,
    target_addr: &str,
) -> Result<Running, Box<dyn std::error::Error>> {
    let target = target_server(target_addr).await?;
    let pki = pki()?;
    let proxy = Proxy::to(&format!("http://{target}"))?;
    let server = proxy
        .listen_with(
            proxy_addr,
            ListenOptions::default().tls(TlsConfig::from_pem(
                pki.cert_pem.as_str(),
                pki.key_pem.as_str(),
            )?),
        )
        .await?;
    Ok(Running {
        proxy: server.local_addr(),
        server,
        target,
        ca_pem: pki.ca_pem,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let running = start(
        &env_addr("PROXY_ADDR", "127.0.0.1:8443"),
        &env_addr("TARGET_ADDR", "127.0.0.1:9000"),
    )
    .await?;
    let ca = std::env::temp_dir().join("switchyard-example-ca.pem");
    std::fs::write(&ca, &running.ca_pem)?;
    println!(
        "TLS proxy on https://localhost:{} -> http://{}\ntry: curl --cacert {} https://localhost:{}/hello",
        running.proxy.port(),
        running.target,
        ca.display(),
        running.proxy.port()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
