//! The API described as OpenAPI 3.1 (`GET /v1/openapi.json`), kept beside the
//! routes in `http.rs` and built from the server's config: the profiles a job
//! may name, the input limits, whether a token is asked for. Every status a
//! route can answer is listed, the HTTP layer's own (414, 431) included; the
//! service's tests provoke them against a real server and run schemathesis.

use crate::api::{LIST_LIMIT_MAX, TIMEOUT_PATTERN};
use serde_json::{json, Value};
use warmpool_core::Config;

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// An error answered with `Retry-After` (seconds) when it is worth a retry.
fn error_with_retry(description: &str) -> Value {
    let mut r = error_response(description);
    r["headers"] = json!({"Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0}
    }});
    r
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

/// A query string that does not parse: a value of the wrong type or out of its
/// range, or a parameter given twice.
const BAD_QUERY: &str = "a query parameter given twice, or one that does not parse or is out of range (the error says which)";

/// The answers of the HTTP layer, before any route: any request can get them.
fn transport_responses() -> [(&'static str, Value); 2] {
    [
        (
            "414",
            json!({"description": "the request target (path and query) is over 65534 bytes; answered by the HTTP layer, with no body"}),
        ),
        (
            "431",
            json!({"description": "the request line and headers are over about 400 KiB, or there are over 100 headers; answered by the HTTP layer, with no body"}),
        ),
    ]
}

/// `responses` and what every route under `/v1` may answer besides: 401 when a
/// token is asked for, 500 (a failure of the server's own), 503 with
/// `Retry-After` while the job store is unreachable (`store`: the route reads
/// it), and the HTTP layer's answers.
fn v1_responses(responses: Value, auth: bool, store: bool) -> Value {
    let mut r = open_responses(responses);
    if let Some(m) = r.as_object_mut() {
        if auth {
            m.insert(
                "401".into(),
                error_response(
                    "missing or wrong token: send Authorization: Bearer <WARMPOOL_API_TOKEN>",
                ),
            );
        }
        if store {
            m.insert("500".into(), error_response("the server failed (a store error other than being unreachable, a failed task); the error says what"));
            m.entry("503").or_insert_with(|| {
                error_with_retry(
                    "the job store is unreachable (a database restarting): retry after Retry-After",
                )
            });
        }
    }
    r
}

/// `responses` and the HTTP layer's answers.
fn open_responses(mut responses: Value) -> Value {
    if let Some(m) = responses.as_object_mut() {
        for (status, r) in transport_responses() {
            m.insert(status.into(), r);
        }
    }
    responses
}

fn text(description: &str) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}})
}

fn nullable(ty: &str) -> Value {
    json!([ty, "null"])
}

/// A JSON string with no NUL byte (a job's env values and args cannot hold one).
const NO_NUL: &str = "^[^\\x00]*$";

/// The request body of `POST /v1/jobs` for `config`: its profiles by name, its
/// limits on counts (byte limits are in the descriptions: JSON Schema counts
/// characters), each profile's `secret_env` refused in `env`.
fn submit_schema(config: &Config) -> Value {
    let limits = &config.server.limits;
    let names: Vec<&String> = config.profiles.keys().collect();
    let mut schema = json!({
        "type": "object",
        "required": ["profile"],
        "additionalProperties": false,
        "properties": {
            "profile": {"type": "string", "minLength": 1, "enum": names, "description": "one of this server's profiles; another name is a 400"},
            "env": {
                "type": "object",
                "maxProperties": limits.max_env,
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "additionalProperties": {"type": "string", "pattern": NO_NUL},
                "description": format!("variable names of letters, digits and _, not starting with a digit, none of the profile's secret_env; values without a NUL byte; at most [server] max_env entries ({}) in max_env_bytes ({} bytes, each KEY=VALUE with a NUL)", limits.max_env, limits.max_env_bytes)
            },
            "args": {
                "type": "array",
                "maxItems": limits.max_args,
                "items": {"type": "string", "pattern": NO_NUL},
                "description": format!("without a NUL byte; at most [server] max_args ({}) in max_args_bytes ({} bytes, each with a NUL)", limits.max_args, limits.max_args_bytes)
            },
            "stdin": {"type": nullable("string"), "description": format!("at most [server] max_stdin bytes ({})", limits.max_stdin)},
            "timeout": {
                "type": nullable("string"),
                "pattern": TIMEOUT_PATTERN,
                "examples": ["30s", "500ms", "1.5m"],
                "description": "overrides the profile's job_timeout: a positive number and a unit, ms, s (the default), m or h, under 1e12ms, 1e9s, 1e7m or 1e5h; under 1ms counts as 1ms"
            }
        }
    });
    // A profile's secret_env comes from the server, never from the job.
    let secret: Vec<Value> = config
        .profiles
        .iter()
        .filter(|(_, p)| !p.secret_env.is_empty())
        .map(|(name, p)| {
            json!({
                "if": {"properties": {"profile": {"const": name}}},
                "then": {"properties": {"env": {"propertyNames": {"not": {"enum": p.secret_env}}}}}
            })
        })
        .collect();
    if !secret.is_empty() {
        schema["allOf"] = Value::Array(secret);
    }
    schema
}

/// The document for a server with `config`; `auth`: it asks for a bearer token.
pub fn document(config: &Config, auth: bool) -> Value {
    let job_ref = json!({"$ref": "#/components/schemas/Job"});
    let states = [
        "queued",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "interrupted",
    ];
    let v1 = |responses: Value| v1_responses(responses, auth, true);
    let mut components = json!({
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}}
            },
            "SubmitJob": submit_schema(config),
            "Job": {
                "type": "object",
                "required": ["id", "profile", "state", "stdout", "stderr", "stdout_bytes", "stderr_bytes", "stdout_cut", "stderr_cut", "output_url", "truncated", "created_at"],
                "properties": {
                    "id": {"type": "string"},
                    "profile": {"type": "string"},
                    "state": {"type": "string", "enum": states},
                    "exit_code": {"type": nullable("integer")},
                    "signal": {"type": nullable("integer")},
                    "warm": {"type": nullable("boolean")},
                    "node": {"type": nullable("string"), "description": "the node that runs or ran it"},
                    "stdout": {"type": "string", "description": "the head of stdout as text: decoded as UTF-8, each invalid sequence and each control character but \\n, \\t and \\r shown as U+FFFD, cut so that it is at most [server] inline_output bytes (default 1 MiB) JSON-encoded; empty in the list. The exact bytes are at output_url."},
                    "stderr": {"type": "string", "description": "the head of stderr, as stdout"},
                    "stdout_bytes": {"type": "integer", "format": "int64", "minimum": 0, "description": "bytes stdout holds (what output_url returns)"},
                    "stderr_bytes": {"type": "integer", "format": "int64", "minimum": 0, "description": "bytes stderr holds (output_url?stream=stderr)"},
                    "stdout_cut": {"type": "boolean", "description": "stdout shows only a head (or nothing) of the stream; the rest is at output_url"},
                    "stderr_cut": {"type": "boolean", "description": "stderr shows only a head (or nothing) of the stream; the rest is at output_url?stream=stderr"},
                    "output_url": {"type": "string", "examples": ["/v1/jobs/j-1/output"], "description": "the streams' exact bytes"},
                    "truncated": {"type": "boolean", "description": "the job wrote more than its profile's output_limit; the rest was dropped"},
                    "error": {"type": nullable("string")},
                    "created_at": {"type": "string", "format": "date-time"},
                    "started_at": {"type": nullable("string"), "format": "date-time"},
                    "finished_at": {"type": nullable("string"), "format": "date-time"}
                }
            },
            "Pool": {
                "type": "object",
                "required": ["node", "profile", "image", "idle", "busy", "starting", "queued", "target_idle", "hits", "misses"],
                "properties": {
                    "node": {"type": "string", "description": "the node ([server] instance) whose pool it is"},
                    "profile": {"type": "string"},
                    "image": {"type": "string"},
                    "idle": {"type": "integer", "minimum": 0},
                    "busy": {"type": "integer", "minimum": 0},
                    "starting": {"type": "integer", "minimum": 0},
                    "queued": {"type": "integer", "minimum": 0},
                    "target_idle": {"type": "integer", "minimum": 0},
                    "hits": {"type": "integer", "minimum": 0},
                    "misses": {"type": "integer", "minimum": 0},
                    "reuse": {"type": "integer", "minimum": 1, "description": "jobs a container may serve (the profile's reuse)"},
                    "reused": {"type": "integer", "minimum": 0, "description": "containers reset by their gate after a job and parked again"},
                    "reset_failed": {"type": "integer", "minimum": 0, "description": "resets that failed (the container was removed)"},
                    "jobs_per_container": {"type": "number", "minimum": 0, "description": "jobs run per container parked so far"},
                    "claim_p50_ms": {"type": nullable("number"), "minimum": 0, "description": "median time from a claim to a container in hand on this node since it started, in ms (null before the first job)"},
                    "claim_p90_ms": {"type": nullable("number"), "minimum": 0, "description": "90th percentile of the same"},
                    "claim_p99_ms": {"type": nullable("number"), "minimum": 0, "description": "99th percentile of the same"}
                }
            },
            "Readiness": {
                "type": "object",
                "required": ["ready", "node", "engine", "store", "pools"],
                "properties": {
                    "ready": {"type": "boolean"},
                    "reason": {"type": "string", "description": "why not ready (absent when ready)"},
                    "node": {"type": "string"},
                    "engine": {
                        "type": "object",
                        "required": ["reachable"],
                        "properties": {"reachable": {"type": "boolean"}, "error": {"type": "string"}}
                    },
                    "store": {
                        "type": "object",
                        "required": ["writable", "leased"],
                        "properties": {
                            "writable": {"type": "boolean", "description": "this node's heartbeat (a write) was stored within three heartbeat intervals"},
                            "leased": {"type": "boolean"},
                            "last_write_seconds": {"type": "number", "minimum": 0}
                        }
                    },
                    "pools": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["profile", "idle", "min_idle", "target_idle", "busy", "starting", "queued", "engine_down"],
                            "properties": {
                                "profile": {"type": "string"},
                                "idle": {"type": "integer", "minimum": 0},
                                "min_idle": {"type": "integer", "minimum": 0},
                                "target_idle": {"type": "integer", "minimum": 0},
                                "busy": {"type": "integer", "minimum": 0},
                                "starting": {"type": "integer", "minimum": 0},
                                "queued": {"type": "integer", "minimum": 0},
                                "engine_down": {"type": "boolean"}
                            }
                        }
                    }
                }
            },
            "Node": {
                "type": "object",
                "required": ["instance", "address", "last_seen", "joined", "alive", "lost", "generation", "pools"],
                "properties": {
                    "instance": {"type": "string"},
                    "address": {"type": "string"},
                    "last_seen": {"type": "string", "format": "date-time"},
                    "joined": {"type": "string", "format": "date-time"},
                    "alive": {"type": "boolean", "description": "seen within [cluster] node_timeout and not declared lost"},
                    "lost": {"type": "boolean", "description": "declared lost: its running jobs were taken over"},
                    "generation": {"type": "integer", "description": "bumped at every join"},
                    "pools": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}}
                }
            }
        }
    });
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "warmpool",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run one-shot container jobs on warm, parked containers. Errors are {\"error\": \"...\"} (but the HTTP layer's 414 and 431, which have no body). A method a path does not have is a 405 with Allow; a path not listed here is a 404."
        },
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job (stored before the answer).",
                    "description": "The body is read as JSON whatever its Content-Type (so never a 415); every refusal of the body or the query is a 400 (never a 422).",
                    "parameters": [{"name": "wait", "in": "query", "schema": {"type": "boolean"}, "description": "answer when the job ends, with the whole job"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitJob"}}}},
                    "responses": v1(json!({
                        "201": {"description": "accepted", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["id", "state"],
                            "properties": {"id": {"type": "string"}, "state": {"type": "string", "enum": ["queued"]}}}}}},
                        "200": {"description": "with wait=true: the ended job", "content": {"application/json": {"schema": job_ref}}},
                        "400": error_response(&format!("invalid job: malformed JSON, unknown fields, an unknown profile, a bad env name or one of the profile's secret_env, a NUL byte, a bad timeout, or input over a [server] limit (max_env entries, default 4096; max_env_bytes, 1 MiB of KEY=VALUE with a NUL each; max_args, 4096; max_args_bytes, 512 KiB; max_stdin, 10 MiB), the error naming the limit; or {BAD_QUERY}")),
                        "404": error_response("with wait=true: the job was removed (retention) before it ended"),
                        "413": error_response("body over [server] max_body (default 10 MiB)"),
                        "429": error_with_retry("the profile's queue is full (max_queue); retry after Retry-After"),
                        "503": error_with_retry("shutting down (no Retry-After: try another node), or the job store is unreachable (retry after Retry-After)")
                    }))
                },
                "get": {
                    "summary": "List jobs, newest first.",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": {"type": "string", "enum": states}},
                        {"name": "profile", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT_MAX, "default": 100}}
                    ],
                    "responses": v1(json!({
                        "200": {"description": "jobs", "content": {"application/json": {"schema": {"type": "array", "items": job_ref}}}},
                        "400": error_response(&format!("a state that is not a job state, a limit out of 1..={LIST_LIMIT_MAX}, or {BAD_QUERY}"))
                    }))
                }
            },
            "/v1/jobs/{id}": {
                "get": {
                    "summary": "One job, with the head of each stream inline (see Job.stdout; all of it at /v1/jobs/{id}/output).",
                    "parameters": [id_param()],
                    "responses": v1(json!({
                        "200": {"description": "the job", "content": {"application/json": {"schema": job_ref}}},
                        "400": error_response("the id is not UTF-8 once percent-decoded"),
                        "404": error_response("no such job")
                    }))
                }
            },
            "/v1/jobs/{id}/output": {
                "get": {
                    "summary": "A job's raw output; live with follow=true (Server-Sent Events for Accept: text/event-stream).",
                    "parameters": [
                        id_param(),
                        {"name": "stream", "in": "query", "schema": {"type": "string", "enum": ["stdout", "stderr"], "default": "stdout"}},
                        {"name": "follow", "in": "query", "schema": {"type": "boolean", "default": false}}
                    ],
                    "responses": v1(json!({
                        "200": {"description": "the bytes", "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "text/event-stream": {"schema": {"type": "string"}}}},
                        "400": error_response(&format!("a stream that is not stdout or stderr, an id that is not UTF-8 once percent-decoded, or {BAD_QUERY}")),
                        "404": error_response("no such job")
                    }))
                }
            },
            "/v1/jobs/{id}/cancel": {
                "post": {
                    "summary": "Cancel a queued or running job.",
                    "parameters": [id_param()],
                    "responses": v1(json!({
                        "200": {"description": "the cancelled job", "content": {"application/json": {"schema": job_ref}}},
                        "400": error_response("the id is not UTF-8 once percent-decoded"),
                        "404": error_response("no such job"),
                        "409": error_response("the job has already ended")
                    }))
                }
            },
            "/v1/pools": {
                "get": {
                    "summary": "Every node's pools: this node's now, the others' as of their last heartbeat.",
                    "responses": v1(json!({
                        "200": {"description": "one entry per node and profile", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}}}}}
                    }))
                }
            },
            "/v1/nodes": {
                "get": {
                    "summary": "The nodes sharing this job store, with their heartbeats and pools.",
                    "responses": v1(json!({
                        "200": {"description": "one entry per node", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}}
                    }))
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document.", "responses": v1_responses(json!({
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
                }), auth, false)}
            },
            "/healthz": {"get": {"summary": "The process is up.", "security": [], "responses": open_responses(json!({"200": text("ok")}))}},
            "/readyz": {"get": {"summary": "This node can take work: its engine answers, its store took a write lately, it is not shutting down. Pool levels are shown, never decide.", "security": [],
                "responses": open_responses(json!({
                    "200": {"description": "ready", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}},
                    "503": {"description": "not ready: `reason` says why", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}}
                }))}},
            "/metrics": {"get": {"summary": "Prometheus text.", "security": [], "responses": open_responses(json!({"200": text("metrics")}))}}
        }
    });
    if auth {
        components["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
        doc["security"] = json!([{"bearer": []}]);
    } else if let Some(paths) = doc["paths"].as_object_mut() {
        // No token: nothing to say about security.
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                op.remove("security");
            }
        }
    }
    doc["components"] = components;
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            "[server]\nmax_env = 7\nmax_args = 9\n[profiles.echo]\nimage = \"x\"\nsecret_env = [\"TOKEN\"]\n[profiles.other]\nimage = \"y\"\n",
        )
        .unwrap()
    }

    /// Every operation of the document: (path, method, operation).
    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((path.clone(), method.clone(), op.clone()));
            }
        }
        out
    }

    fn statuses(op: &Value) -> Vec<&str> {
        op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn every_v1_operation_documents_401_when_a_token_is_asked_for() {
        let doc = document(&config(), true);
        let ops = operations(&doc);
        assert_eq!(
            ops.len(),
            11,
            "{:?}",
            ops.iter().map(|o| &o.0).collect::<Vec<_>>()
        );
        for (path, method, op) in &ops {
            let open = op.get("security") == Some(&json!([]));
            assert_eq!(open, !path.starts_with("/v1/"), "{method} {path}");
            assert_eq!(
                statuses(op).contains(&"401"),
                !open,
                "{method} {path}: {:?}",
                statuses(op)
            );
        }
        assert_eq!(doc["security"], json!([{"bearer": []}]));
        // Without a token nothing asks for one, and no route answers 401.
        let doc = document(&config(), false);
        assert!(doc.get("security").is_none());
        assert!(doc["components"].get("securitySchemes").is_none());
        for (path, method, op) in operations(&doc) {
            assert!(!statuses(&op).contains(&"401"), "{method} {path}");
            assert!(op.get("security").is_none(), "{method} {path}");
        }
    }

    #[test]
    fn every_operation_documents_the_http_layers_414_and_431() {
        for (path, method, op) in operations(&document(&config(), true)) {
            for status in ["414", "431"] {
                let r = &op["responses"][status];
                assert!(r.is_object(), "{method} {path} {status}");
                assert!(
                    r.get("content").is_none(),
                    "{method} {path} {status}: no body"
                );
            }
        }
    }

    #[test]
    fn every_operation_with_a_query_or_a_path_documents_400_and_the_store_errors() {
        for (path, method, op) in operations(&document(&config(), true)) {
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            if !params.is_empty() || op.get("requestBody").is_some() {
                let e = &op["responses"]["400"];
                assert_eq!(
                    e["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path}"
                );
            }
            if params.iter().any(|p| p["in"] == "query") {
                let d = op["responses"]["400"]["description"].as_str().unwrap();
                assert!(d.contains("given twice"), "{method} {path}: {d}");
            }
            let reads_the_store =
                path.starts_with("/v1/jobs") || path == "/v1/pools" || path == "/v1/nodes";
            assert_eq!(
                op["responses"].get("500").is_some(),
                reads_the_store,
                "{method} {path}"
            );
            if reads_the_store {
                let r = &op["responses"]["503"];
                assert!(r["headers"]["Retry-After"].is_object(), "{method} {path}");
            }
        }
        let doc = document(&config(), true);
        let submit = &doc["paths"]["/v1/jobs"]["post"]["responses"];
        for status in ["200", "201", "400", "404", "413", "429", "503"] {
            assert!(submit[status].is_object(), "POST /v1/jobs {status}");
        }
        assert!(submit["429"]["headers"]["Retry-After"].is_object());
        assert!(doc["paths"]["/v1/jobs/{id}/cancel"]["post"]["responses"]["409"].is_object());
    }

    #[test]
    fn the_job_schema_is_what_the_server_takes() {
        let doc = document(&config(), false);
        let s = &doc["components"]["schemas"]["SubmitJob"];
        // Only this server's profiles; "" is none of them.
        assert_eq!(s["properties"]["profile"]["enum"], json!(["echo", "other"]));
        assert_eq!(s["properties"]["profile"]["minLength"], 1);
        assert_eq!(s["properties"]["env"]["maxProperties"], 7);
        assert_eq!(s["properties"]["args"]["maxItems"], 9);
        assert_eq!(
            s["properties"]["timeout"]["pattern"],
            crate::api::TIMEOUT_PATTERN
        );
        // echo's secret_env is refused in echo's jobs only.
        assert_eq!(
            s["allOf"],
            json!([{
                "if": {"properties": {"profile": {"const": "echo"}}},
                "then": {"properties": {"env": {"propertyNames": {"not": {"enum": ["TOKEN"]}}}}}
            }])
        );
        let limit = &doc["paths"]["/v1/jobs"]["get"]["parameters"][2]["schema"];
        assert_eq!(
            (limit["minimum"].clone(), limit["maximum"].clone()),
            (json!(1), json!(1000))
        );
    }
}
