//! The operator's Kubernetes client: the usual kubeconfig resolution, the operator's
//! User-Agent, and a client-side rate limit (a token bucket, as client-go's `QPS`/`Burst`).
//!
//! The limit guards the API server against a runaway loop in the operator; it is set high
//! enough (see [`ClientOptions::default`]) never to bind in normal work.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use kube::Client;
use kube::client::ClientBuilder;
use tokio::time::{Instant, Sleep};

use super::USER_AGENT;

/// Client-side rate limit of the operator's requests to the API server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientOptions {
    /// Sustained requests per second (`0`: no limit).
    pub qps: f64,
    /// Requests that may go at once above the sustained rate (the bucket's size).
    pub burst: u32,
}

impl ClientOptions {
    /// Default `--kube-api-qps`.
    ///
    /// `make bench-replace` scaling a group from 0 to 300 makes about 3,900 writes in 13 s
    /// (about 300 per second on average, Events included): the limit must stay above that
    /// not to slow the operator down where it matters. client-go's own defaults (5/10) or
    /// controller-runtime's (20/30) would turn that scale-up into minutes.
    pub const DEFAULT_QPS: f64 = 500.0;
    /// Default `--kube-api-burst`: two seconds' worth of the default rate, so a start (lists
    /// and watches) or a mass failure goes out at once.
    pub const DEFAULT_BURST: u32 = 1000;
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            qps: Self::DEFAULT_QPS,
            burst: Self::DEFAULT_BURST,
        }
    }
}

/// Reads the kubeconfig by the usual resolution (`KUBECONFIG`, `~/.kube/config`,
/// in-cluster), with the operator's User-Agent.
pub async fn config() -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::infer().await.map_err(|e| {
        anyhow::anyhow!(
            "no Kubernetes configuration found: set KUBECONFIG, write ~/.kube/config, or run in a Pod with a ServiceAccount ({e})"
        )
    })?;
    config.headers.push((
        hyper::header::USER_AGENT,
        hyper::header::HeaderValue::from_static(USER_AGENT),
    ));
    Ok(config)
}

/// A client for `config` whose requests pass the rate limit of `options`.
pub fn build(config: kube::Config, options: ClientOptions) -> anyhow::Result<Client> {
    let builder = ClientBuilder::try_from(config)?;
    Ok(if options.qps > 0.0 {
        builder
            .with_layer(&RateLimitLayer::new(options.qps, options.burst))
            .build()
    } else {
        builder.build()
    })
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second; a request takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A tower layer that lets requests through a [`TokenBucket`].
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    rate: f64,
    burst: u32,
}

impl RateLimitLayer {
    /// `rate` requests per second sustained, `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate, burst }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: TokenBucket::new(self.rate, self.burst, Instant::now()),
            reserved: false,
            waiting: None,
        }
    }
}

/// The service of [`RateLimitLayer`]: `poll_ready` is pending until a token is there.
///
/// kube's [`Client`] puts its stack behind a `Buffer`, so one instance serves every request
/// of the client, in order.
pub struct RateLimit<S> {
    inner: S,
    bucket: TokenBucket,
    /// A token was taken for the next `call`.
    reserved: bool,
    /// Waiting for the next token: the timer and when the wait began.
    waiting: Option<(Pin<Box<Sleep>>, Instant)>,
}

impl<S, R> tower::Service<R> for RateLimit<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.reserved {
            if let Some((sleep, _)) = self.waiting.as_mut()
                && sleep.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            let now = Instant::now();
            match self.bucket.try_take(now) {
                Ok(()) => {
                    self.reserved = true;
                    if let Some((_, since)) = self.waiting.take() {
                        let waited = now - since;
                        if waited >= Duration::from_secs(1) {
                            tracing::info!(
                                ?waited,
                                "a request to the API server waited for the client-side rate limit (--kube-api-qps, --kube-api-burst)"
                            );
                        }
                    }
                }
                Err(wait) => {
                    let since = self.waiting.take().map_or(now, |(_, since)| since);
                    self.waiting = Some((Box::pin(tokio::time::sleep(wait)), since));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.reserved = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3, start);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(start), Ok(()));
        }
        let wait = bucket.try_take(start).unwrap_err();
        assert!(
            (wait.as_secs_f64() - 0.1).abs() < 1e-9,
            "one token per 100ms: {wait:?}"
        );
        assert_eq!(bucket.try_take(start + Duration::from_millis(100)), Ok(()));
        // Idle time refills up to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[tokio::test]
    async fn the_layer_holds_requests_beyond_the_burst_to_the_rate() {
        let mut service = tower::Layer::layer(
            &RateLimitLayer::new(100.0, 5),
            tower::service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) }),
        );
        let start = Instant::now();
        for n in 0..5 {
            assert_eq!(service.ready().await.unwrap().call(n).await.unwrap(), n);
        }
        let burst = start.elapsed();
        assert!(
            burst < Duration::from_millis(40),
            "the burst went at once: {burst:?}"
        );
        for n in 5..25 {
            assert_eq!(service.ready().await.unwrap().call(n).await.unwrap(), n);
        }
        // The 20 beyond the burst at 100/s: at least 200ms (less than one more token early).
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_secs(2),
            "25 requests at 100/s with a burst of 5 took {took:?}"
        );
    }
}
