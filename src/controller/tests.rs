//! In-process reconcile tests against a fake API server (a `tower` service standing in for
//! the HTTP client), for the paths an end-to-end test reaches only slowly: a stale status
//! write (409), a refusal (403) reported once and backed off, and its clearing on success.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use crate::api::{
    CONDITION_STALLED, FINALIZER_GROUP, REASON_REQUEST_REFUSED, REASON_REQUESTS_ACCEPTED,
    ScalingGroup,
};
use crate::clock::{Clock, SystemClock};
use crate::health::ProbeEngine;
use crate::telemetry::Metrics;

use super::context::{Context, STALLED_MANAGER, Settings, group_of_instance};
use super::error::{ErrorKind, kube_err};
use super::events::EventSink;
use super::group;
use super::streams::Index;

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    body: Value,
}

/// A fake API server: records every request; answers status patches of ScalingGroups with
/// `status_code` (200: the patched group), Event and ControllerRevision creates by echoing
/// them, and anything else with 404.
#[derive(Clone)]
struct FakeApi {
    seen: Arc<Mutex<Vec<Seen>>>,
    status_code: Arc<Mutex<u16>>,
}

impl FakeApi {
    fn new(status_code: u16) -> Self {
        Self {
            seen: Arc::default(),
            status_code: Arc::new(Mutex::new(status_code)),
        }
    }

    fn client(&self) -> Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let path = parts.uri.path().to_string();
                fake.seen.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    path_and_query: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    body: body.clone(),
                });
                let (code, answer) = if path.ends_with("/scalinggroups/web/status") {
                    let code = *fake.status_code.lock().unwrap();
                    if code == 200 {
                        // The patched group: the fixture with the applied status.
                        let mut g = serde_json::to_value(group_fixture()).unwrap();
                        g["metadata"]["resourceVersion"] = json!("2");
                        g["status"] = body["status"].clone();
                        (200, g)
                    } else {
                        (code, status_body(code))
                    }
                } else if (path.contains("/events") || path.contains("/controllerrevisions"))
                    && parts.method == "POST"
                {
                    (201, body)
                } else {
                    (404, status_body(404))
                };
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "ns")
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (up to 5 s) until a request matching `f` was received.
    async fn wait_for(&self, what: &str, f: impl Fn(&Seen) -> bool) -> Seen {
        for _ in 0..500 {
            if let Some(s) = self.seen().into_iter().find(|s| f(s)) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no request {what}; seen: {:#?}", self.seen());
    }
}

fn status_body(code: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Status", "status": "Failure",
        "message": format!("refused by the fake API with {code}"),
        "reason": "Fake", "code": code
    })
}

/// A group with its finalizer and no Instances wanted (so a reconcile only writes status).
fn group_fixture() -> ScalingGroup {
    let mut g: ScalingGroup = serde_json::from_value(json!({
        "apiVersion": "autoheal.dev/v1alpha1",
        "kind": "ScalingGroup",
        "metadata": {
            "name": "web", "namespace": "ns", "uid": "g-uid", "generation": 1,
            "resourceVersion": "1", "finalizers": [FINALIZER_GROUP]
        },
        "spec": {
            "minSize": 0, "maxSize": 3, "desiredCapacity": 0,
            "template": { "spec": { "podTemplate": { "spec": { "containers": [ { "name": "app" } ] } } } }
        }
    }))
    .unwrap();
    g.metadata.uid = Some("g-uid".into());
    g
}

fn store_of<K>(objects: &[K]) -> kube::runtime::reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    writer.apply_watcher_event(&Event::Init);
    for o in objects {
        writer.apply_watcher_event(&Event::InitApply(o.clone()));
    }
    writer.apply_watcher_event(&Event::InitDone);
    writer.as_reader()
}

fn context(fake: &FakeApi) -> Arc<Context> {
    let client = fake.client();
    let metrics = Metrics::new();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let instances = store_of(&[]);
    Arc::new(Context::new(
        client.clone(),
        store_of(&[group_fixture()]),
        instances.clone(),
        Index::of_store(group_of_instance, &instances),
        store_of(&[]),
        store_of(&[]),
        ProbeEngine::start(metrics.clone()),
        metrics,
        EventSink::new(client, "test", clock.clone()),
        clock,
        Settings::default(),
    ))
}

fn is_status_patch(s: &Seen) -> bool {
    s.method == "PATCH" && s.path_and_query.contains("/scalinggroups/web/status")
}

#[tokio::test]
async fn a_stale_status_write_is_a_conflict_retried_at_once_without_backoff() {
    let fake = FakeApi::new(409);
    let ctx = context(&fake);
    let obj = Arc::new(group_fixture());
    let err = group::reconcile(obj.clone(), ctx.clone())
        .await
        .expect_err("the fake refuses the status write with 409");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // The write carried the resourceVersion the status was computed from.
    let patch = fake.seen().into_iter().find(is_status_patch).unwrap();
    assert_eq!(patch.body["metadata"]["resourceVersion"], json!("1"));
    assert!(patch.path_and_query.contains("fieldManager=autoheal"));
    for _ in 0..3 {
        let action = group::error_policy(obj.clone(), &err, ctx.clone());
        assert_eq!(action, Action::requeue(Duration::from_millis(200)));
    }
    assert_eq!(ctx.backoff.backing_off(group::CONTROLLER), 0);
    assert!(
        !fake
            .seen()
            .iter()
            .any(|s| s.path_and_query.contains("/events")),
        "a conflict is not reported"
    );
}

#[tokio::test]
async fn a_refusal_is_reported_once_backs_off_and_is_cleared_on_success() {
    let fake = FakeApi::new(403);
    let ctx = context(&fake);
    let obj = Arc::new(group_fixture());
    let mut delays = Vec::new();
    for _ in 0..4 {
        let err = group::reconcile(obj.clone(), ctx.clone())
            .await
            .expect_err("the fake refuses with 403");
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        delays.push(group::error_policy(obj.clone(), &err, ctx.clone()));
    }
    let expected: Vec<Action> = [500, 1_000, 2_000, 4_000]
        .into_iter()
        .map(|ms| Action::requeue(Duration::from_millis(ms)))
        .collect();
    assert_eq!(delays, expected, "exponential per-object backoff");
    assert_eq!(ctx.backoff.backing_off(group::CONTROLLER), 1);

    // Reported once: one Warning Event and one Stalled apply under its own field manager.
    let event = fake
        .wait_for("creating the RequestRefused Event", |s| {
            s.method == "POST" && s.body["reason"] == json!(REASON_REQUEST_REFUSED)
        })
        .await;
    assert_eq!(event.body["type"], json!("Warning"));
    let stalled = fake
        .wait_for("applying Stalled", |s| {
            is_status_patch(s) && s.path_and_query.contains(STALLED_MANAGER)
        })
        .await;
    let condition = &stalled.body["status"]["conditions"][0];
    assert_eq!(condition["type"], json!(CONDITION_STALLED));
    assert_eq!(condition["status"], json!("True"));
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("refused by the fake API with 403")
    );
    let refusal_events = |fake: &FakeApi| {
        fake.seen()
            .iter()
            .filter(|s| s.body["reason"] == json!(REASON_REQUEST_REFUSED))
            .count()
    };
    assert_eq!(refusal_events(&fake), 1, "once, not per retry");

    // The cause goes away: the reconcile succeeds, the backoff resets, Stalled is cleared.
    *fake.status_code.lock().unwrap() = 200;
    group::reconcile(obj.clone(), ctx.clone())
        .await
        .expect("the status write goes through");
    assert_eq!(ctx.backoff.backing_off(group::CONTROLLER), 0);
    let stalled_applies: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| is_status_patch(s) && s.path_and_query.contains(STALLED_MANAGER))
        .collect();
    assert_eq!(stalled_applies.len(), 2, "set once, cleared once");
    // On a group, handed back as False (the group step decides Stalled from then on).
    let cleared = &stalled_applies[1].body["status"]["conditions"][0];
    assert_eq!(cleared["type"], json!(CONDITION_STALLED));
    assert_eq!(cleared["status"], json!("False"));
    assert_eq!(cleared["reason"], json!(REASON_REQUESTS_ACCEPTED));
    // A new refusal later is a new streak: reported again, from the base delay.
    *fake.status_code.lock().unwrap() = 422;
    let obj = Arc::new(group_fixture());
    ctx.fresh_groups.forget("ns", "web");
    let err = group::reconcile(obj.clone(), ctx.clone())
        .await
        .expect_err("422");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(
        group::error_policy(obj, &err, ctx.clone()),
        Action::requeue(Duration::from_millis(500))
    );
    fake.wait_for("a second RequestRefused Event", |_| {
        refusal_events(&fake) == 2
    })
    .await;
}

/// Why part of the read-your-writes overlay stays: the watch delivers the operator's own
/// status write some milliseconds after the API answered it. A reconcile in between (another
/// event of the same group) would compute from the old copy and write the same status again,
/// guarded by the old resourceVersion: a wasted request and a 409. With the overlay it sees
/// its own write and writes nothing.
#[tokio::test]
async fn a_reconcile_right_after_its_own_write_does_not_write_again() {
    let fake = FakeApi::new(200);
    let ctx = context(&fake);
    let obj = Arc::new(group_fixture());
    group::reconcile(obj.clone(), ctx.clone()).await.unwrap();
    // The store still shows resourceVersion 1 (the watch has not delivered the write).
    group::reconcile(obj.clone(), ctx.clone()).await.unwrap();
    let writes = fake.seen().into_iter().filter(is_status_patch).count();
    assert_eq!(writes, 1, "one status write: {:#?}", fake.seen());
    // Without the overlay, the second reconcile would have written again.
    ctx.fresh_groups.forget("ns", "web");
    group::reconcile(obj, ctx.clone()).await.unwrap();
    let writes = fake.seen().into_iter().filter(is_status_patch).count();
    assert_eq!(writes, 2, "the stale copy leads to a second write");
}

#[test]
fn error_kinds_name_what_failed() {
    let err = kube_err("writing the status of ScalingGroup ns/web")(kube::Error::Api(Box::new(
        kube::core::Status::failure("no", "Forbidden").with_code(403),
    )));
    assert!(err.to_string().contains("ns/web"), "{err}");
    assert_eq!(err.kind().as_str(), "forbidden");
}
