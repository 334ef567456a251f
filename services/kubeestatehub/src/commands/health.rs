//! `kubeestatehub health`: the container image's health check, which needs no shell.

use std::time::Duration;

use anyhow::Context as _;

use crate::cli;

/// `kubeestatehub health`: a GET on the local listener's health endpoint.
pub(crate) async fn health_check(
    addr: std::net::SocketAddr,
    check: cli::HealthCheck,
) -> anyhow::Result<()> {
    // A wildcard bind address is reached on loopback.
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let path = match check {
        cli::HealthCheck::Live => "/api/v1/health/live",
        cli::HealthCheck::Ready => "/api/v1/health/ready",
    };
    let url = format!(
        "http://{}{path}",
        std::net::SocketAddr::new(ip, addr.port())
    );
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "GET {url}: {}",
        response.status()
    );
    Ok(())
}
