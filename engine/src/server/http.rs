//! The plain HTTP endpoints every engine serves on its WebSocket listener.
//!
//! | path           | answer |
//! |----------------|--------|
//! | `/healthz`     | 200 `ok` while the process serves |
//! | `/readyz`      | 200 `ready`, or 503 `draining` (see [`EngineHandle::drain`]) |
//! | `/metrics`     | Prometheus text ([`super::metrics`]); with a token, only for `Authorization: Bearer TOKEN` (else 401); 404 when off |
//! | `/stats`       | the demo page's JSON (`backend`, `reactors`, `connections`, `subscriptions`, `topics`, `publications`, `deliveries`, `bytes_out`; `cluster` in a cluster); guarded like `/metrics` |
//! | `/ringcast.js` | the browser client (`text/javascript`) |
//! | `/`            | the demo page (`text/html`), when [`HttpEndpoints::ui`] is on |
//!
//! Any other path goes to the application's own [`Handler::on_http`] (404 by default).
//! `HEAD` gets the headers of `GET`; other methods are answered 405 by the protocol layer.
//! Every answer closes the connection. The endpoints wrap the application's handler
//! (`Endpoints`): upgrades and messages pass straight through.
//!
//! [`EngineHandle::drain`]: super::EngineHandle::drain

use std::sync::Arc;

use super::config::SharedHandler;
use super::handler::{
    Client, Handler, HttpRequest, HttpResponse, Message, Upgrade, UpgradeRequest,
};
use super::metrics;
use super::ready::State;

/// The demo page: a live ticker on `ringcast.js`.
const INDEX_HTML: &[u8] = include_bytes!("web/index.html");
/// The browser client.
const RINGCAST_JS: &[u8] = include_bytes!("web/ringcast.js");

/// Which plain HTTP endpoints an engine serves (see the [module docs](self)); health,
/// readiness and `/ringcast.js` are always served.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpEndpoints {
    /// Serve `/metrics` and `/stats` (default: on).
    pub metrics: bool,
    /// Token `/metrics` and `/stats` require as `Authorization: Bearer TOKEN`; `None`
    /// (the default): anyone who reaches the port may read them.
    pub metrics_token: Option<String>,
    /// Serve the demo page at `/` (default: off).
    pub ui: bool,
}

/// The token is not shown: a builder may be logged.
impl std::fmt::Debug for HttpEndpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpEndpoints")
            .field("metrics", &self.metrics)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "…"))
            .field("ui", &self.ui)
            .finish()
    }
}

impl Default for HttpEndpoints {
    fn default() -> Self {
        Self {
            metrics: true,
            metrics_token: None,
            ui: false,
        }
    }
}

/// The application's handler with the endpoints in front of its `on_http`.
pub(crate) struct Endpoints {
    inner: SharedHandler,
    http: HttpEndpoints,
    state: Arc<State>,
}

impl Endpoints {
    pub(crate) fn new(inner: SharedHandler, http: HttpEndpoints, state: Arc<State>) -> Self {
        Self { inner, http, state }
    }

    /// The endpoint's answer, or `None` for a path it does not serve.
    fn route(&self, req: &HttpRequest<'_>) -> Option<HttpResponse> {
        // Figures of the moment are never cached; the files may be, once revalidated.
        let fresh = |r: HttpResponse| r.header("Cache-Control", "no-store");
        let file = |r: HttpResponse| r.header("Cache-Control", "no-cache");
        let resp = match req.path {
            "/healthz" => fresh(HttpResponse::text(200, "ok\n")),
            "/readyz" if self.state.is_ready() => fresh(HttpResponse::text(200, "ready\n")),
            "/readyz" => fresh(HttpResponse::text(503, "draining\n")),
            "/metrics" | "/stats" if self.http.metrics => {
                if let Err(refused) = self.authorised(req) {
                    return Some(refused);
                }
                let Some((stats, backend)) = self.state.snapshot() else {
                    return Some(HttpResponse::text(503, "starting\n"));
                };
                if req.path == "/metrics" {
                    let text = metrics::encode(stats, backend, self.state.is_ready());
                    fresh(HttpResponse::new(200, metrics::CONTENT_TYPE, text))
                } else {
                    let json = metrics::stats_json(&stats, backend);
                    fresh(HttpResponse::new(200, "application/json", json))
                        // The demo page may be opened from a file, or another origin.
                        .header("Access-Control-Allow-Origin", "*")
                }
            }
            "/ringcast.js" => file(HttpResponse::new(
                200,
                "text/javascript; charset=utf-8",
                RINGCAST_JS,
            )),
            "/" if self.http.ui => file(HttpResponse::new(
                200,
                "text/html; charset=utf-8",
                INDEX_HTML,
            )),
            _ => return None,
        };
        Some(resp)
    }

    /// Checks the metrics token, if one is set.
    fn authorised(&self, req: &HttpRequest<'_>) -> Result<(), HttpResponse> {
        let Some(want) = &self.http.metrics_token else {
            return Ok(());
        };
        let given = req
            .header("authorization")
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(str::trim);
        let refuse = |why: &str| {
            HttpResponse::text(401, format!("{why}\n")).header("WWW-Authenticate", "Bearer")
        };
        match given {
            Some(t) if super::broadcast::constant_time_eq(t.as_bytes(), want.as_bytes()) => Ok(()),
            Some(_) => Err(refuse("invalid metrics token")),
            None => Err(refuse(
                "metrics require a token (Authorization: Bearer TOKEN)",
            )),
        }
    }
}

impl Handler for Endpoints {
    fn on_upgrade(&self, req: &UpgradeRequest<'_>) -> Upgrade {
        self.inner.0.on_upgrade(req)
    }

    fn on_message(&self, client: &mut Client<'_>, msg: Message<'_>) {
        self.inner.0.on_message(client, msg);
    }

    fn on_http(&self, req: &HttpRequest<'_>) -> Option<HttpResponse> {
        self.route(req).or_else(|| self.inner.0.on_http(req))
    }
}
