//! The lab dashboard on port 8080: a page that shows the system at a glance (services, dead-letter
//! queues with a page per DLQ and a Replay button, wallets, products, latest orders), and a small
//! JSON API the `lab` subcommands use to stop and start services, inject faults and handle DLQs.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::response::{Html, Redirect};
use axum::routing::{get, post};
use axum::{Json, Router};
use saga_shared::dlq::DeadLetter;
use saga_shared::dlq::header as dlq_header;
use saga_shared::events::topics;
use saga_shared::http::{ApiError, ApiJson, ApiPath};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::LabClient;
use crate::system::{Lab, Service};

/// The lab, shared between the dashboard and the process that owns it.
pub type SharedLab = Arc<Mutex<Option<Lab>>>;

#[derive(Clone)]
struct DashState {
    lab: SharedLab,
    client: LabClient,
    brokers: String,
}

/// Fault switches of one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSettings {
    /// Every event handler attempt fails (retries, then the DLQ).
    #[serde(default)]
    pub fail_handlers: bool,
    /// Extra delay before each handler attempt.
    #[serde(default)]
    pub slow_ms: u64,
}

pub fn router(lab: SharedLab, client: LabClient, brokers: String) -> Router {
    let state = DashState {
        lab,
        client,
        brokers,
    };
    saga_shared::http::with_middleware(
        Router::new()
            .route("/", get(page))
            .route("/dlq/{topic}", get(dlq_page))
            .route("/dlq/{topic}/replay", post(replay_form))
            .route("/api/status", get(status))
            .route("/api/services/{service}/stop", post(stop_service))
            .route("/api/services/{service}/start", post(start_service))
            .route("/api/faults/{service}", post(set_faults))
            .route("/api/dlq/{topic}", get(list_dlq))
            .route("/api/dlq/{topic}/replay", post(replay_dlq))
            .with_state(state),
    )
}

fn service(name: &str) -> Result<Service, ApiError> {
    Service::parse(name).ok_or_else(|| ApiError::NotFound(format!("no service {name:?}")))
}

fn dlq_topic(topic: &str) -> Result<String, ApiError> {
    let base = topic.trim_end_matches(".dlq");
    if !topics::ALL.contains(&base) {
        return Err(ApiError::NotFound(format!("no topic {topic:?}")));
    }
    Ok(topics::dlq(base))
}

/// The lab behind the lock, unless it is shutting down.
fn running(slot: &mut Option<Lab>) -> Result<&mut Lab, ApiError> {
    slot.as_mut()
        .ok_or_else(|| ApiError::Unavailable("the lab is stopping".into()))
}

async fn status(State(s): State<DashState>) -> Result<Json<Value>, ApiError> {
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let services: Vec<Value> = Service::ALL
        .iter()
        .map(|svc| {
            let f = lab.faults(*svc);
            json!({
                "name": svc.name(),
                "url": lab.url(*svc),
                "running": lab.is_running(*svc),
                "database_url": lab.db_url(*svc),
                "faults": FaultSettings {
                    fail_handlers: f.fail_handlers.load(Ordering::Relaxed),
                    slow_ms: f.slow_ms.load(Ordering::Relaxed),
                },
            })
        })
        .collect();
    Ok(Json(
        json!({"brokers": lab.brokers(), "services": services}),
    ))
}

async fn stop_service(
    State(s): State<DashState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.stop_service(svc).await;
    Ok(Json(json!({"service": svc.name(), "running": false})))
}

async fn start_service(
    State(s): State<DashState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    lab.start_service(svc)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(
        json!({"service": svc.name(), "running": true, "url": lab.url(svc)}),
    ))
}

async fn set_faults(
    State(s): State<DashState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(settings): ApiJson<FaultSettings>,
) -> Result<Json<FaultSettings>, ApiError> {
    let svc = service(&name)?;
    let mut guard = s.lab.lock().await;
    let lab = running(&mut guard)?;
    let f = lab.faults(svc);
    f.fail_handlers
        .store(settings.fail_handlers, Ordering::Relaxed);
    f.slow_ms.store(settings.slow_ms, Ordering::Relaxed);
    Ok(Json(settings))
}

/// The records of the DLQ named by `topic` (`order.created` or `order.created.dlq`).
async fn read_dlq(s: &DashState, topic: &str) -> Result<(String, Vec<DeadLetter>), ApiError> {
    let topic = dlq_topic(topic)?;
    let letters = saga_shared::dlq::list(&s.brokers, &topic)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((topic, letters))
}

/// Replays the DLQ named by `topic`; how many records went back.
async fn replay(s: &DashState, topic: &str) -> Result<(String, usize), ApiError> {
    let topic = dlq_topic(topic)?;
    let n = saga_shared::dlq::replay_all(&s.brokers, &topic)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok((topic, n))
}

async fn list_dlq(
    State(s): State<DashState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (topic, letters) = read_dlq(&s, &topic).await?;
    Ok(Json(json!({"topic": topic, "records": letters})))
}

async fn replay_dlq(
    State(s): State<DashState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let (topic, n) = replay(&s, &topic).await?;
    Ok(Json(json!({"topic": topic, "replayed": n})))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The head of every page; `refresh` reloads it every 2 s.
fn page_head(title: &str, refresh: bool) -> String {
    format!(
        "<!doctype html><html><head><meta charset=utf-8>{}\
         <title>{}</title><style>body{{font-family:sans-serif;margin:2em}}\
         td,th{{padding:2px 10px;text-align:left;vertical-align:top}}\
         .CONFIRMED{{color:green}}.CANCELLED,.error{{color:#b00}}form{{display:inline}}\
         code{{font-size:85%;word-break:break-all}}</style></head><body>",
        if refresh {
            "<meta http-equiv=refresh content=2>"
        } else {
            ""
        },
        escape(title)
    )
}

/// A button that replays every record of `dlq` (a plain form: works without JavaScript).
fn replay_button(dlq: &str) -> String {
    format!(
        "<form method=post action='/dlq/{dlq}/replay'><button type=submit>Replay</button></form>"
    )
}

#[derive(Debug, Deserialize)]
struct DlqPageQuery {
    /// Set after a replay: how many records went back to their topic.
    replayed: Option<usize>,
}

/// One DLQ: every record with the headers that say where it came from and why it failed.
async fn dlq_page(
    State(s): State<DashState>,
    ApiPath(topic): ApiPath<String>,
    Query(q): Query<DlqPageQuery>,
) -> Result<Html<String>, ApiError> {
    let (topic, letters) = read_dlq(&s, &topic).await?;
    let mut html = page_head(&topic, false);
    html.push_str(&format!(
        "<p><a href='/'>&larr; dashboard</a></p><h1>{topic}</h1>"
    ));
    if let Some(n) = q.replayed {
        html.push_str(&format!(
            "<p id=replayed>Replayed {n} record(s) to their original topic.</p>"
        ));
    }
    html.push_str(&format!(
        "<p><span id=count>{}</span> record(s). {}</p>",
        letters.len(),
        replay_button(&topic)
    ));
    html.push_str(
        "<table id=letters><tr><th>partition/offset</th><th>from</th><th>group</th>\
         <th>attempts</th><th>error</th><th>dead-lettered at</th><th>value</th></tr>",
    );
    for d in &letters {
        let h = |name| escape(d.header(name).unwrap_or("-"));
        // Poison values can be any bytes: show control characters as U+FFFD, like invalid UTF-8.
        let value: String = d
            .value
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(300)
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect();
        html.push_str(&format!(
            "<tr><td>{}/{}</td><td>{} {}/{}</td><td>{}</td><td>{}</td><td class=error>{}</td>\
             <td>{}</td><td><code>{}</code></td></tr>",
            d.partition,
            d.offset,
            h(dlq_header::ORIGINAL_TOPIC),
            h(dlq_header::ORIGINAL_PARTITION),
            h(dlq_header::ORIGINAL_OFFSET),
            h(dlq_header::CONSUMER_GROUP),
            h(dlq_header::ATTEMPTS),
            h(dlq_header::ERROR),
            h(dlq_header::TIME),
            escape(&value),
        ));
    }
    html.push_str("</table></body></html>");
    Ok(Html(html))
}

/// The Replay button: replays, then shows the DLQ page again (POST-redirect-GET).
async fn replay_form(
    State(s): State<DashState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Redirect, ApiError> {
    let (topic, n) = replay(&s, &topic).await?;
    Ok(Redirect::to(&format!("/dlq/{topic}?replayed={n}")))
}

async fn page(State(s): State<DashState>) -> Html<String> {
    let mut html = page_head("saga lab", true);
    html.push_str("<h1>Kafka saga lab</h1>");
    {
        let guard = s.lab.lock().await;
        if let Some(lab) = guard.as_ref() {
            html.push_str("<h2>Services</h2><table><tr><th>service</th><th>url</th><th>running</th><th>faults</th></tr>");
            for svc in Service::ALL {
                let f = lab.faults(svc);
                html.push_str(&format!(
                    "<tr><td>{}</td><td><a href='{u}/openapi.json'>{u}</a></td><td>{}</td><td>fail={} slow={}ms</td></tr>",
                    svc.name(),
                    lab.is_running(svc),
                    f.fail_handlers.load(Ordering::Relaxed),
                    f.slow_ms.load(Ordering::Relaxed),
                    u = lab.url(svc),
                ));
            }
            html.push_str(&format!("</table><p>broker: {}</p>", escape(lab.brokers())));
        }
    }
    html.push_str(
        "<h2>Dead-letter queues</h2><table id=dlqs><tr><th>topic</th><th>records</th><th></th></tr>",
    );
    let dlqs: Vec<String> = topics::ALL.iter().map(|t| topics::dlq(t)).collect();
    match saga_shared::dlq::depths(&s.brokers, &dlqs).await {
        Ok(depths) => {
            for (dlq, n) in depths {
                let actions = if n > 0 {
                    format!("<a href='/dlq/{dlq}'>show</a> {}", replay_button(&dlq))
                } else {
                    String::new()
                };
                html.push_str(&format!(
                    "<tr id='{dlq}'><td>{dlq}</td><td class=records>{n}</td><td>{actions}</td></tr>"
                ));
            }
        }
        Err(e) => html.push_str(&format!(
            "<tr><td colspan=3 class=error>broker unreachable: {}</td></tr>",
            escape(&e.to_string())
        )),
    }
    html.push_str("</table><h2>Wallets</h2><table>");
    if let Ok(Value::Array(ws)) = s.client.wallets().await {
        for w in ws {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(w["customer_id"].as_str().unwrap_or("")),
                w["balance"]
            ));
        }
    }
    html.push_str(
        "</table><h2>Products</h2><table><tr><th>sku</th><th>stock</th><th>reserved</th></tr>",
    );
    if let Ok(Value::Array(ps)) = s.client.products().await {
        for p in ps {
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(p["sku"].as_str().unwrap_or("")),
                p["stock"],
                p["reserved"]
            ));
        }
    }
    html.push_str("</table><h2>Latest orders</h2><table><tr><th>id</th><th>customer</th><th>total</th><th>status</th><th>reason</th></tr>");
    let url = format!("{}/orders?limit=20", s.client.order);
    if let Ok(res) = s.client.http().get(url).send().await
        && let Ok(Value::Array(orders)) = res.json::<Value>().await
    {
        for o in orders {
            let status = o["status"].as_str().unwrap_or("");
            html.push_str(&format!(
                "<tr><td><a href='{}/orders/{id}'>{id}</a></td><td>{}</td><td>{}</td><td class={status}>{status}</td><td>{}</td></tr>",
                s.client.order,
                escape(o["customer_id"].as_str().unwrap_or("")),
                o["total"],
                escape(o["reason"].as_str().unwrap_or("")),
                id = o["id"].as_str().unwrap_or(""),
            ));
        }
    }
    html.push_str("</table></body></html>");
    Html(html)
}
