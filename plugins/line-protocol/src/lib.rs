//! A transport adapter: GraphQL subscriptions over `fanwire-lines`, a
//! protocol of one-line text frames, for clients that would rather not speak
//! JSON envelopes. Offer `Sec-WebSocket-Protocol: fanwire-lines`.
//!
//! Client frames:
//!
//! | frame | meaning |
//! |---|---|
//! | `HELLO` or `HELLO {json}` | open the session; the JSON object goes to the connection policy |
//! | `SUB <id> <query>` | start subscription `<id>` (no variables) |
//! | `SUBV <id> <variables json>\n<query>` | the same with variables |
//! | `STOP <id>` | stop it |
//! | `PING` | answered with `PONG` |
//!
//! Server frames: `WELCOME`, `PONG`, `DATA <id> <execution result json>`,
//! `ERROR <id> <errors json>`, `DONE <id>`. The host keeps every rule of
//! graphql-transport-ws (init timeout, duplicate ids, close codes); this
//! plugin only translates. `DATA` frames are built by the host from the
//! template `DATA <id> ` + result, so results cost no WASM call.

use fanwire_sdk::transport::{ClientMessage, ServerMessage, SubscribeRequest, Template};
use fanwire_sdk::{Object, TransportAdapter, Value};

struct Lines;

fn object(text: &str) -> Result<Object, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(format!("expected a JSON object, got {text:?}")),
    }
}

impl TransportAdapter for Lines {
    fn subprotocol() -> String {
        "fanwire-lines".into()
    }

    fn decode(frame: &str) -> Result<ClientMessage, String> {
        let (verb, rest) = frame.split_once(' ').unwrap_or((frame, ""));
        match verb {
            "HELLO" if rest.trim().is_empty() => Ok(ClientMessage::Init(Object::new())),
            "HELLO" => Ok(ClientMessage::Init(object(rest)?)),
            "PING" => Ok(ClientMessage::Ping(None)),
            "STOP" if !rest.is_empty() => Ok(ClientMessage::Complete(rest.to_owned())),
            "SUB" | "SUBV" => {
                let (id, rest) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("{verb} needs an id and a query"))?;
                let (variables, query) = if verb == "SUBV" {
                    let (vars, query) = rest
                        .split_once('\n')
                        .ok_or("SUBV needs variables, a newline, then the query")?;
                    (object(vars)?, query)
                } else {
                    (Object::new(), rest)
                };
                Ok(ClientMessage::Subscribe(SubscribeRequest {
                    id: id.to_owned(),
                    query: query.to_owned(),
                    variables,
                    ..SubscribeRequest::default()
                }))
            }
            _ => Err(format!("unknown frame {verb:?}")),
        }
    }

    fn encode(message: ServerMessage) -> Option<String> {
        Some(match message {
            ServerMessage::Ack(_) => "WELCOME".into(),
            ServerMessage::Pong(_) => "PONG".into(),
            ServerMessage::Error { id, errors } => format!("ERROR {id} {errors}"),
            ServerMessage::Complete(id) => format!("DONE {id}"),
        })
    }

    fn template(id: &str) -> Template {
        Template {
            prefix: format!("DATA {id} "),
            suffix: String::new(),
        }
    }
}

fanwire_sdk::export_transport!(Lines);
