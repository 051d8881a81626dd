//! A mocked API server (the `tower-test` pattern of kube-rs/controller-rs): the test receives
//! each request the operator makes, asserts it is the one expected, and answers it.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// A client whose every request arrives at the returned [`ApiServer`].
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer { handle })
}

fn respond(send: SendResponse<Response<Body>>, status: StatusCode, body: &Value) {
    let body = serde_json::to_vec(body).expect("json");
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("response"),
    );
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": "not found", "reason": "NotFound", "code": 404})
}

impl ApiServer {
    /// The next request: asserts its method and path, returns its body and the responder.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (String, Value, SendResponse<Response<Body>>) {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("expected {method} {path}, but no request came"))
                .unwrap_or_else(|| panic!("expected {method} {path}, but the client is gone"));
        let seen = format!("{} {}", request.method(), request.uri());
        let matches = request.method() == method && request.uri().path() == path;
        let query = request.uri().query().unwrap_or_default().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        assert!(
            matches,
            "expected {method} {path}, got {seen} with body {body}"
        );
        (query, body, send)
    }

    pub async fn get_statefulset(&mut self, name: &str, sts: Option<&StatefulSet>) {
        let path = format!("/apis/apps/v1/namespaces/default/statefulsets/{name}");
        let (_, _, send) = self.expect(Method::GET, &path).await;
        match sts {
            Some(sts) => respond(
                send,
                StatusCode::OK,
                &serde_json::to_value(sts).expect("json"),
            ),
            None => respond(send, StatusCode::NOT_FOUND, &not_found()),
        }
    }

    pub async fn list_pods(&mut self, pods: &[Pod]) {
        let (query, _, send) = self
            .expect(Method::GET, "/api/v1/namespaces/default/pods")
            .await;
        assert!(
            query.contains("labelSelector="),
            "pods are listed by the cluster's selector: {query}"
        );
        respond(
            send,
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": pods}),
        );
    }

    /// A read of Secret `name`, answered with `secret` or 404.
    #[allow(dead_code)]
    /// Expects `DELETE` of pod `name` and answers as the API server does; returns the
    /// DeleteOptions sent.
    pub async fn delete_pod(&mut self, name: &str) -> Value {
        let (_, body, send) = self
            .expect(
                Method::DELETE,
                &format!("/api/v1/namespaces/default/pods/{name}"),
            )
            .await;
        respond(
            send,
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}}),
        );
        body
    }

    pub async fn get_secret(&mut self, name: &str, secret: Option<&Value>) {
        let path = format!("/api/v1/namespaces/default/secrets/{name}");
        let (_, _, send) = self.expect(Method::GET, &path).await;
        match secret {
            Some(secret) => respond(send, StatusCode::OK, secret),
            None => respond(send, StatusCode::NOT_FOUND, &not_found()),
        }
    }

    /// A server-side apply to `path`; answered with the body. Returns the body.
    pub async fn apply(&mut self, path: &str) -> Value {
        let (query, mut body, send) = self.expect(Method::PATCH, path).await;
        assert!(
            query.contains("fieldManager=kuberaft-operator"),
            "one field manager: {query}"
        );
        assert!(query.contains("force=true"), "{query}");
        body["metadata"]["resourceVersion"] = json!("1");
        respond(send, StatusCode::OK, &body);
        body
    }

    /// The five owned objects, in the order the operator applies them; returns them by kind.
    pub async fn apply_all(&mut self, cluster: &str) -> OwnedObjects {
        let svc = |name: String| format!("/api/v1/namespaces/default/services/{name}");
        let peers = self.apply(&svc(format!("{cluster}-peers"))).await;
        let client = self.apply(&svc(cluster.to_string())).await;
        let leader = self.apply(&svc(format!("{cluster}-leader"))).await;
        let statefulset = self
            .apply(&format!(
                "/apis/apps/v1/namespaces/default/statefulsets/{cluster}"
            ))
            .await;
        let pdb = self
            .apply(&format!(
                "/apis/policy/v1/namespaces/default/poddisruptionbudgets/{cluster}"
            ))
            .await;
        OwnedObjects {
            peers,
            client,
            leader,
            statefulset,
            pdb,
        }
    }

    /// A status write; answered with the cluster carrying it. Returns the status.
    pub async fn status(&mut self, rc: &kuberaft_operator::crd::RaftCluster) -> Value {
        let name = rc.metadata.name.clone().unwrap_or_default();
        let path =
            format!("/apis/kuberaft.io/v1alpha1/namespaces/default/raftclusters/{name}/status");
        let (query, body, send) = self.expect(Method::PATCH, &path).await;
        assert!(query.contains("fieldManager=kuberaft-operator"), "{query}");
        assert_eq!(body["kind"], "RaftCluster");
        let mut answer = serde_json::to_value(rc).expect("json");
        answer["status"] = body["status"].clone();
        respond(send, StatusCode::OK, &answer);
        body["status"].clone()
    }

    /// A merge patch of a pod's labels. Returns the patch.
    pub async fn pod_label(&mut self, pod: &str) -> Value {
        let path = format!("/api/v1/namespaces/default/pods/{pod}");
        let (_, body, send) = self.expect(Method::PATCH, &path).await;
        respond(
            send,
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": "default"}}),
        );
        body
    }

    /// An Event; returns (type, reason, note).
    pub async fn event(&mut self) -> (String, String, String) {
        let (_, body, send) = self
            .expect(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await;
        respond(send, StatusCode::CREATED, &body);
        let field = |k: &str| body[k].as_str().unwrap_or_default().to_string();
        (field("type"), field("reason"), field("note"))
    }

    /// Answers the next request to `path` with a 500.
    pub async fn fail(&mut self, method: Method, path: &str) {
        let (_, _, send) = self.expect(method, path).await;
        respond(
            send,
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500}),
        );
    }

    /// Asserts that the operator makes no further request.
    pub async fn nothing_more(&mut self) {
        if let Ok(Some((request, _))) =
            tokio::time::timeout(Duration::from_millis(300), self.handle.next_request()).await
        {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

pub struct OwnedObjects {
    pub peers: Value,
    pub client: Value,
    pub leader: Value,
    pub statefulset: Value,
    pub pdb: Value,
}
