//! The API described as OpenAPI 3.0 (`GET /v1/openapi.json`), kept beside the
//! routes in `http.rs`; the service's tests validate it.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn id_param() -> Value {
    json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}})
}

pub fn document() -> Value {
    let job_ref = json!({"$ref": "#/components/schemas/Job"});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "warmpool",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run one-shot container jobs on warm, parked containers."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}}
                },
                "SubmitJob": {
                    "type": "object",
                    "required": ["profile"],
                    "additionalProperties": false,
                    "properties": {
                        "profile": {"type": "string"},
                        "env": {"type": "object", "additionalProperties": {"type": "string"}, "description": "at most [server] max_env entries (default 4096) in max_env_bytes (default 1 MiB)"},
                        "args": {"type": "array", "items": {"type": "string"}, "description": "at most [server] max_args (default 4096) in max_args_bytes (default 512 KiB)"},
                        "stdin": {"type": "string", "description": "at most [server] max_stdin bytes (default 10 MiB)"},
                        "timeout": {"type": "string", "example": "30s"}
                    }
                },
                "Job": {
                    "type": "object",
                    "required": ["id", "profile", "state", "stdout", "stderr", "stdout_bytes", "stderr_bytes", "stdout_cut", "stderr_cut", "output_url", "truncated", "created_at"],
                    "properties": {
                        "id": {"type": "string"},
                        "profile": {"type": "string"},
                        "state": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "timed_out", "cancelled", "interrupted"]},
                        "exit_code": {"type": "integer", "nullable": true},
                        "signal": {"type": "integer", "nullable": true},
                        "warm": {"type": "boolean", "nullable": true},
                        "node": {"type": "string", "nullable": true, "description": "the node that runs or ran it"},
                        "stdout": {"type": "string", "description": "the head of stdout as text: decoded as UTF-8, each invalid sequence and each control character but \\n, \\t and \\r shown as U+FFFD, cut so that it is at most [server] inline_output bytes (default 1 MiB) JSON-encoded; empty in the list. The exact bytes are at output_url."},
                        "stderr": {"type": "string", "description": "the head of stderr, as stdout"},
                        "stdout_bytes": {"type": "integer", "format": "int64", "minimum": 0, "description": "bytes stdout holds (what output_url returns)"},
                        "stderr_bytes": {"type": "integer", "format": "int64", "minimum": 0, "description": "bytes stderr holds (output_url?stream=stderr)"},
                        "stdout_cut": {"type": "boolean", "description": "stdout shows only a head (or nothing) of the stream; the rest is at output_url"},
                        "stderr_cut": {"type": "boolean", "description": "stderr shows only a head (or nothing) of the stream; the rest is at output_url?stream=stderr"},
                        "output_url": {"type": "string", "example": "/v1/jobs/j-1/output", "description": "the streams' exact bytes"},
                        "truncated": {"type": "boolean", "description": "the job wrote more than its profile's output_limit; the rest was dropped"},
                        "error": {"type": "string", "nullable": true},
                        "created_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": "string", "format": "date-time", "nullable": true},
                        "finished_at": {"type": "string", "format": "date-time", "nullable": true}
                    }
                },
                "Pool": {
                    "type": "object",
                    "required": ["node", "profile", "image", "idle", "busy", "starting", "queued", "target_idle", "hits", "misses"],
                    "properties": {
                        "node": {"type": "string", "description": "the node ([server] instance) whose pool it is"},
                        "profile": {"type": "string"},
                        "image": {"type": "string"},
                        "idle": {"type": "integer"},
                        "busy": {"type": "integer"},
                        "starting": {"type": "integer"},
                        "queued": {"type": "integer"},
                        "target_idle": {"type": "integer"},
                        "hits": {"type": "integer"},
                        "misses": {"type": "integer"}
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
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job (stored before the answer).",
                    "parameters": [{"name": "wait", "in": "query", "schema": {"type": "boolean"}, "description": "answer when the job ends, with the whole job"}],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SubmitJob"}}}},
                    "responses": {
                        "201": {"description": "accepted", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["id", "state"],
                            "properties": {"id": {"type": "string"}, "state": {"type": "string"}}}}}},
                        "200": {"description": "with wait=true: the ended job", "content": {"application/json": {"schema": job_ref}}},
                        "400": error_response("invalid job: malformed JSON, unknown fields or profile, a bad env name, a NUL byte, a bad timeout, or input over a [server] limit (max_env entries, default 4096; max_env_bytes, 1 MiB of KEY=VALUE with a NUL each; max_args, 4096; max_args_bytes, 512 KiB; max_stdin, 10 MiB), the error naming the limit"),
                        "401": error_response("missing or wrong token"),
                        "413": {"description": "body over [server] max_body"},
                        "429": error_response("the profile's queue is full; see Retry-After"),
                        "503": error_response("shutting down")
                    }
                },
                "get": {
                    "summary": "List jobs, newest first.",
                    "parameters": [
                        {"name": "state", "in": "query", "schema": {"type": "string"}},
                        {"name": "profile", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}
                    ],
                    "responses": {
                        "200": {"description": "jobs", "content": {"application/json": {"schema": {"type": "array", "items": job_ref}}}},
                        "400": error_response("bad filter"),
                        "401": error_response("missing or wrong token")
                    }
                }
            },
            "/v1/jobs/{id}": {
                "get": {
                    "summary": "One job, with the head of each stream inline (see Job.stdout; all of it at /v1/jobs/{id}/output).",
                    "parameters": [id_param()],
                    "responses": {
                        "200": {"description": "the job", "content": {"application/json": {"schema": job_ref}}},
                        "404": error_response("no such job")
                    }
                }
            },
            "/v1/jobs/{id}/output": {
                "get": {
                    "summary": "A job's raw output; live with follow=true (Server-Sent Events for Accept: text/event-stream).",
                    "parameters": [
                        id_param(),
                        {"name": "stream", "in": "query", "schema": {"type": "string", "enum": ["stdout", "stderr"]}},
                        {"name": "follow", "in": "query", "schema": {"type": "boolean"}}
                    ],
                    "responses": {
                        "200": {"description": "the bytes", "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "text/event-stream": {"schema": {"type": "string"}}}},
                        "404": error_response("no such job")
                    }
                }
            },
            "/v1/jobs/{id}/cancel": {
                "post": {
                    "summary": "Cancel a queued or running job.",
                    "parameters": [id_param()],
                    "responses": {
                        "200": {"description": "the cancelled job", "content": {"application/json": {"schema": job_ref}}},
                        "404": error_response("no such job"),
                        "409": error_response("the job has already ended")
                    }
                }
            },
            "/v1/pools": {
                "get": {
                    "summary": "Every node's pools: this node's now, the others' as of their last heartbeat.",
                    "responses": {
                        "200": {"description": "one entry per node and profile", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Pool"}}}}},
                        "503": error_response("the job store is unreachable")
                    }
                }
            },
            "/v1/nodes": {
                "get": {
                    "summary": "The nodes sharing this job store, with their heartbeats and pools.",
                    "responses": {
                        "200": {"description": "one entry per node", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}}}}},
                        "503": error_response("the job store is unreachable")
                    }
                }
            },
            "/v1/openapi.json": {
                "get": {"summary": "This document.", "responses": {"200": {"description": "OpenAPI 3.0"}}}
            },
            "/healthz": {"get": {"summary": "The process is up.", "security": [], "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "The engine is reachable and every pool is at min_idle.", "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready, and why"}}}},
            "/metrics": {"get": {"summary": "Prometheus text.", "security": [], "responses": {"200": {"description": "metrics"}}}}
        }
    })
}
