//! What stands between a client and a serving role's handlers: rate limits per token
//! subject (per client IP without one), request timeouts, a bound on requests in flight,
//! and CORS. Shared by the command API and the GraphQL service; [`EdgeArgs`] are their flags.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Json, Router};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use serde_json::json;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Authenticated, Caller};
use crate::config::parse_duration;

/// Limits of a serving role; flattened into `orderflow command` and `orderflow query`.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Requests per second each token subject may make, on average; 0 turns rate limiting
    /// off.
    #[arg(
        long = "rate-limit",
        env = "ORDERFLOW_RATE_LIMIT",
        default_value_t = 50
    )]
    pub rate_limit: u32,
    /// Requests a token subject may make at once above its rate (the bucket's size).
    #[arg(
        long = "rate-limit-burst",
        env = "ORDERFLOW_RATE_LIMIT_BURST",
        default_value_t = 100
    )]
    pub rate_limit_burst: u32,
    /// Requests per second from one client IP without a valid token: registration (the one
    /// route that answers them) and refusals; 0 turns this limit off.
    #[arg(
        long = "anonymous-rate-limit",
        env = "ORDERFLOW_ANONYMOUS_RATE_LIMIT",
        default_value_t = 2
    )]
    pub anonymous_rate_limit: u32,
    /// Requests one client IP may make at once above its anonymous rate.
    #[arg(
        long = "anonymous-rate-limit-burst",
        env = "ORDERFLOW_ANONYMOUS_RATE_LIMIT_BURST",
        default_value_t = 10
    )]
    pub anonymous_rate_limit_burst: u32,
    /// Longest a request may take; past it the answer is 503 with Retry-After (a
    /// `minVersion` or `X-Min-Position` wait is bounded well below this).
    #[arg(long = "request-timeout", env = "ORDERFLOW_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Requests served at once; more are answered 503 with Retry-After at once, so a flood
    /// cannot queue up behind the database pool.
    #[arg(long = "max-concurrent-requests", env = "ORDERFLOW_MAX_CONCURRENT_REQUESTS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_concurrent_requests: u32,
    /// Take the client's IP (for the anonymous rate limit) from the last address of
    /// `X-Forwarded-For`: set this only behind exactly one proxy that appends it (a load
    /// balancer, an ingress), or every client shares the proxy's address; never without
    /// one, or clients choose their own.
    #[arg(long = "trust-forwarded-for", env = "ORDERFLOW_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,
    /// Origins browsers may call from (CORS), comma-separated, or `*` for any; off when
    /// empty (the default).
    #[arg(
        long = "cors-allow-origin",
        env = "ORDERFLOW_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,
}

impl Default for EdgeArgs {
    /// No rate limits, no CORS; the timeout and concurrency bound of the flags' defaults.
    fn default() -> Self {
        Self {
            rate_limit: 0,
            rate_limit_burst: 100,
            anonymous_rate_limit: 0,
            anonymous_rate_limit_burst: 10,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 512,
            trust_forwarded_for: false,
            cors_allow_origin: Vec::new(),
        }
    }
}

/// How a role writes its refusals: the REST body or GraphQL's error list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Rest,
    GraphQl,
}

impl Shape {
    /// A refusal with `code` in this shape.
    pub fn error(self, status: StatusCode, code: &str, message: &str) -> Response {
        let body = match self {
            Self::Rest => json!({"error": {"code": code, "message": message}}),
            Self::GraphQl => {
                json!({"errors": [{"message": message, "extensions": {"code": code}}]})
            }
        };
        (status, Json(body)).into_response()
    }
}

type Limiter =
    RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// One role's limits, built once from [`EdgeArgs`].
#[derive(Clone)]
pub struct Edge {
    args: EdgeArgs,
    shape: Shape,
    subjects: Option<Arc<Limiter>>,
    anonymous: Option<Arc<Limiter>>,
    /// One bound for every route: axum layers each endpoint on its own, so the permits
    /// must be made here, once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("args", &self.args).finish()
    }
}

impl Edge {
    pub fn new(args: EdgeArgs, shape: Shape) -> Result<Self, String> {
        let limiter = |rate: u32, burst: u32, what: &str| -> Result<_, String> {
            let Some(rate) = NonZeroU32::new(rate) else {
                return Ok(None);
            };
            let burst = NonZeroU32::new(burst)
                .ok_or_else(|| format!("the {what} burst must be at least 1"))?;
            let quota = Quota::per_second(rate).allow_burst(burst);
            Ok(Some(Arc::new(
                RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            )))
        };
        for origin in &args.cors_allow_origin {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(format!("--cors-allow-origin {origin:?} is not an origin"));
            }
        }
        if args.request_timeout.is_zero() {
            return Err("--request-timeout must be longer than zero".into());
        }
        Ok(Self {
            subjects: limiter(args.rate_limit, args.rate_limit_burst, "rate limit")?,
            anonymous: limiter(
                args.anonymous_rate_limit,
                args.anonymous_rate_limit_burst,
                "anonymous rate limit",
            )?,
            in_flight: Arc::new(tokio::sync::Semaphore::new(
                args.max_concurrent_requests as usize,
            )),
            args,
            shape,
        })
    }

    /// The limits of `router`'s routes: requests are counted against their caller (so
    /// [`crate::auth::authenticate`] must run first: layer it after this), then bounded in
    /// time and number.
    pub fn apply<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        let shape = self.shape;
        let timeout = self.args.request_timeout;
        let bounded = ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |err: BoxError| async move {
                overloaded(shape, &err, timeout)
            }))
            .load_shed()
            .layer(GlobalConcurrencyLimitLayer::with_semaphore(
                self.in_flight.clone(),
            ))
            .timeout(timeout);
        let edge = self.clone();
        let router =
            router
                .layer(bounded)
                .layer(axum::middleware::from_fn(move |request, next| {
                    let edge = edge.clone();
                    async move { edge.limit(request, next).await }
                }));
        // Keys of callers that have gone quiet would otherwise stay for the process's life.
        for limiter in [&self.subjects, &self.anonymous].into_iter().flatten() {
            let limiter = Arc::downgrade(limiter);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    every.tick().await;
                    let Some(limiter) = limiter.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        router
    }

    /// CORS for browsers on other origins, when any are configured; layered outermost so
    /// preflights and refusals carry its headers.
    pub fn cors(&self) -> Option<CorsLayer> {
        let origins = &self.args.cors_allow_origin;
        if origins.is_empty() {
            return None;
        }
        let allow = if origins.iter().any(|origin| origin == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(
                origins
                    .iter()
                    .filter_map(|origin| HeaderValue::from_str(origin).ok()),
            )
        };
        Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::IF_MATCH,
                    HeaderName::from_static("idempotency-key"),
                    HeaderName::from_static("x-correlation-id"),
                    HeaderName::from_static("x-min-position"),
                ])
                .expose_headers([
                    header::ETAG,
                    header::LOCATION,
                    header::RETRY_AFTER,
                    HeaderName::from_static("x-correlation-id"),
                    HeaderName::from_static("ratelimit-limit"),
                    HeaderName::from_static("ratelimit-remaining"),
                    HeaderName::from_static("ratelimit-reset"),
                ])
                .max_age(Duration::from_secs(600)),
        )
    }

    /// Count the request against its caller's bucket: 429 with Retry-After when it is
    /// empty; the bucket's state in `RateLimit-*` headers (IETF draft) either way.
    async fn limit(&self, request: Request, next: Next) -> Response {
        let caller = request
            .extensions()
            .get::<Authenticated>()
            .and_then(|authenticated| authenticated.0.as_ref().ok());
        let forwarded = self
            .args
            .trust_forwarded_for
            .then(|| last_forwarded_for(request.headers()))
            .flatten();
        let ip = forwarded.or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        });
        let (limiter, key) = match (caller, ip) {
            (Some(Caller::Token(principal)), _) => {
                (&self.subjects, format!("sub:{}", principal.sub))
            }
            // Without authentication every client is trusted as much as a token subject.
            (Some(Caller::Unchecked), ip) => (&self.subjects, ip_key(ip)),
            (_, ip) => (&self.anonymous, ip_key(ip)),
        };
        let Some(limiter) = limiter else {
            return next.run(request).await;
        };
        match limiter.check_key(&key) {
            Ok(state) => {
                let quota = state.quota();
                let remaining = state.remaining_burst_capacity();
                let mut response = next.run(request).await;
                let used = quota.burst_size().get().saturating_sub(remaining);
                let reset = quota.replenish_interval().saturating_mul(used);
                rate_headers(&mut response, quota.burst_size().get(), remaining, reset);
                response
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let quota = not_until.quota();
                let mut response = self.shape.error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    &format!(
                        "too many requests: at most {} at once, then one every {} ms",
                        quota.burst_size(),
                        quota.replenish_interval().as_millis()
                    ),
                );
                rate_headers(&mut response, quota.burst_size().get(), 0, wait);
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds(wait));
                response
            }
        }
    }
}

/// The bucket of a client address: an IPv6 client is its /64, since one host commonly
/// holds a whole /64 and could otherwise take a fresh bucket per request.
fn ip_key(ip: Option<IpAddr>) -> String {
    match ip {
        None => "ip:unknown".to_owned(),
        Some(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let s = v6.segments();
                format!("ip:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// The address the nearest proxy appended to `X-Forwarded-For`.
fn last_forwarded_for(headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whole seconds, rounded up (a client told 0 would retry at once).
fn seconds(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs)
}

fn rate_headers(response: &mut Response, limit: u32, remaining: u32, reset: Duration) {
    let headers = response.headers_mut();
    headers.insert("ratelimit-limit", HeaderValue::from(limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("ratelimit-reset", seconds(reset));
}

/// A request shed (too many in flight) or past its time: 503 with Retry-After.
fn overloaded(shape: Shape, err: &BoxError, timeout: Duration) -> Response {
    let (code, message) = if err.is::<tower::timeout::error::Elapsed>() {
        (
            "TIMEOUT",
            format!(
                "the request took longer than {} ms; a write may have been applied: retry with the same Idempotency-Key",
                timeout.as_millis()
            ),
        )
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        (
            "OVERLOADED",
            "too many requests in flight; retry shortly".to_owned(),
        )
    } else {
        ("UNAVAILABLE", format!("the request failed: {err}"))
    };
    let mut response = shape.error(StatusCode::SERVICE_UNAVAILABLE, code, &message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// A refusal of an unauthenticated request: 401 with the `WWW-Authenticate` challenge.
pub fn unauthenticated(shape: Shape, err: &crate::auth::AuthError) -> Response {
    let mut response = shape.error(StatusCode::UNAUTHORIZED, err.code(), &err.to_string());
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, err.challenge());
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt as _;

    use super::*;

    fn slow_app(args: EdgeArgs) -> Router {
        let edge = Edge::new(args, Shape::Rest).unwrap();
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }),
        );
        let app = edge.apply(app);
        let app = match edge.cors() {
            Some(cors) => app.layer(cors),
            None => app,
        };
        // As serving does: handlers become services once, so the layers' state (the
        // concurrency bound's semaphore) is shared by every request.
        app.with_state(())
    }

    async fn code(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        body["error"]["code"].as_str().unwrap().to_owned()
    }

    fn get_slow() -> Request {
        Request::get("/slow").body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_request_past_its_timeout_is_answered_503_with_retry_after() {
        let app = slow_app(EdgeArgs {
            request_timeout: Duration::from_millis(50),
            ..EdgeArgs::default()
        });
        let response = app.oneshot(get_slow()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(code(response).await, "TIMEOUT");
    }

    #[tokio::test]
    async fn requests_beyond_the_concurrency_bound_are_shed_at_once() {
        let app = slow_app(EdgeArgs {
            max_concurrent_requests: 1,
            ..EdgeArgs::default()
        });
        let busy = tokio::spawn(app.clone().oneshot(get_slow()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let shed = app.clone().oneshot(get_slow()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "shed, not queued: {:?} {}",
            started.elapsed(),
            shed.status()
        );
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        assert_eq!(code(shed).await, "OVERLOADED");
        assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
        // The slot is free again.
        assert_eq!(
            app.oneshot(get_slow()).await.unwrap().status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn the_concurrency_bound_holds_across_routes() {
        let edge = Edge::new(
            EdgeArgs {
                max_concurrent_requests: 1,
                ..EdgeArgs::default()
            },
            Shape::Rest,
        )
        .unwrap();
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        };
        let app = edge
            .apply(Router::new().route("/a", get(slow)).route("/b", get(slow)))
            .with_state(());
        let busy = tokio::spawn(
            app.clone()
                .oneshot(Request::get("/a").body(Body::empty()).unwrap()),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let other = app
            .oneshot(Request::get("/b").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    }

    #[test]
    fn clients_are_keyed_by_address_and_ipv6_by_its_64() {
        let v6 = |text: &str| ip_key(Some(text.parse().unwrap()));
        assert_eq!(v6("2001:db8:1:2:aaaa::1"), v6("2001:db8:1:2:bbbb::2"));
        assert_ne!(v6("2001:db8:1:2::1"), v6("2001:db8:1:3::1"));
        assert_eq!(v6("::ffff:10.0.0.1"), v6("10.0.0.1"));
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 10.1.2.3"),
        );
        assert_eq!(
            last_forwarded_for(&headers),
            Some("10.1.2.3".parse().unwrap())
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(last_forwarded_for(&headers), None);
    }

    #[tokio::test]
    async fn cors_is_off_by_default_and_answers_preflights_for_listed_origins() {
        let preflight = || {
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/slow")
                .header(header::ORIGIN, "https://shop.example")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization")
                .body(Body::empty())
                .unwrap()
        };
        let off = slow_app(EdgeArgs::default())
            .oneshot(preflight())
            .await
            .unwrap();
        assert!(off
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
        let on = slow_app(EdgeArgs {
            cors_allow_origin: vec!["https://shop.example".into()],
            ..EdgeArgs::default()
        })
        .oneshot(preflight())
        .await
        .unwrap();
        assert_eq!(
            on.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://shop.example"
        );
        let other = slow_app(EdgeArgs {
            cors_allow_origin: vec!["https://elsewhere.example".into()],
            ..EdgeArgs::default()
        })
        .oneshot(preflight())
        .await
        .unwrap();
        assert!(other
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
    }

    #[test]
    fn bad_limits_are_refused() {
        let zero_burst = EdgeArgs {
            rate_limit: 5,
            rate_limit_burst: 0,
            ..EdgeArgs::default()
        };
        assert!(Edge::new(zero_burst, Shape::Rest).is_err());
        let bad_origin = EdgeArgs {
            cors_allow_origin: vec!["bad\norigin".into()],
            ..EdgeArgs::default()
        };
        assert!(Edge::new(bad_origin, Shape::Rest).is_err());
    }
}
