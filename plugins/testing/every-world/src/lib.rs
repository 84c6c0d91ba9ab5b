//! Test plugin: one component that exports `fanwire:plugin@0.3.0`'s
//! `filter`, `subscription`, `connection` and `transport` interfaces, so
//! the host loads it as any of those kinds and its 0.3 bindings of each
//! world are exercised. Each part is small:
//!
//! - filter: a row filter: a group's context is its subject; an event
//!   passes where its `user_id` is that subject; anonymous groups are denied;
//! - subscription policy: refuses the field named by the config
//!   (`{"refuse": "secrets"}`) with the code `REFUSED_0_3`;
//! - connection policy: accepts an init payload with a `subject`, as that
//!   subject, with the ack `{"version":"0.3"}`; refuses the rest;
//! - transport: the subprotocol `every-world-0.3`, whose frames are the
//!   words `init`, `ping`, `pong`, `sub <id> <query>` and `stop <id>`.

wit_bindgen::generate!({
    path: "../../../wit/v0.3.0",
    inline: "
        package fanwire-testing:every-world;

        world every-world {
            import fanwire:plugin/host@0.3.0;
            export fanwire:plugin/filter@0.3.0;
            export fanwire:plugin/subscription@0.3.0;
            export fanwire:plugin/connection@0.3.0;
            export fanwire:plugin/transport@0.3.0;
        }
    ",
    world: "fanwire-testing:every-world/every-world",
    // The world lives in another package than the interfaces it names.
    generate_all,
});

use exports::fanwire::plugin::connection::{Accepted, Guest as Connection, Request};
use exports::fanwire::plugin::filter::{Context, Decision, Guest as Filter, PerEvent, Verdict};
use exports::fanwire::plugin::subscription::Guest as SubscriptionPolicy;
use exports::fanwire::plugin::transport::{
    ClientMessage, Guest as Transport, ServerMessage, SubscribeRequest, Template,
};
use fanwire::plugin::host;
use fanwire::plugin::types::{Event, GraphqlError, Principal, Subscription};
use serde_json::Value;

struct EveryWorld;

impl Filter for EveryWorld {
    fn prepare(group: Subscription) -> Verdict {
        match group.principal.subject {
            Some(subject) => Verdict::PerEvent(PerEvent {
                fields: Some(vec!["user_id".into()]),
                context: subject,
            }),
            None => Verdict::DenyAll("every-world (0.3): anonymous".into()),
        }
    }

    fn decide(event: Event, contexts: Vec<Context>) -> Vec<Decision> {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let owner = data.get("user_id").and_then(Value::as_str);
        contexts
            .iter()
            .map(|subject| match owner {
                Some(owner) if owner == subject => Decision::Allow,
                _ => Decision::Deny("every-world (0.3): not the subscriber's row".into()),
            })
            .collect()
    }
}

impl SubscriptionPolicy for EveryWorld {
    fn check(subscription: Subscription) -> Result<(), GraphqlError> {
        let config: Value = serde_json::from_str(&host::config()).unwrap_or(Value::Null);
        if config.get("refuse").and_then(Value::as_str) == Some(subscription.field.as_str()) {
            return Err(GraphqlError {
                message: format!("every-world (0.3): `{}` is refused", subscription.field),
                code: Some("REFUSED_0_3".into()),
            });
        }
        Ok(())
    }
}

impl Connection for EveryWorld {
    fn check(request: Request) -> Result<Accepted, String> {
        let payload: Value = serde_json::from_str(&request.init_payload).unwrap_or(Value::Null);
        match payload.get("subject").and_then(Value::as_str) {
            Some(subject) => Ok(Accepted {
                principal: Principal {
                    subject: Some(subject.into()),
                    tenant: None,
                    roles: Vec::new(),
                    claims: "{}".into(),
                    expires_at: None,
                },
                ack: Some("{\"version\":\"0.3\"}".into()),
            }),
            None => Err("every-world (0.3): no subject".into()),
        }
    }
}

impl Transport for EveryWorld {
    fn subprotocol() -> String {
        "every-world-0.3".into()
    }

    fn decode(frame: String) -> Result<ClientMessage, String> {
        let mut words = frame.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("init"), None, None) => Ok(ClientMessage::Init("{}".into())),
            (Some("ping"), None, None) => Ok(ClientMessage::Ping(None)),
            (Some("pong"), None, None) => Ok(ClientMessage::Pong),
            (Some("sub"), Some(id), Some(query)) => {
                Ok(ClientMessage::Subscribe(SubscribeRequest {
                    id: id.into(),
                    query: query.into(),
                    operation_name: None,
                    variables: "{}".into(),
                    extensions: "{}".into(),
                }))
            }
            (Some("stop"), Some(id), None) => Ok(ClientMessage::Complete(id.into())),
            _ => Err(format!("every-world (0.3): unknown frame {frame:?}")),
        }
    }

    fn encode(message: ServerMessage) -> Option<String> {
        Some(match message {
            ServerMessage::Ack(_) => "ack".into(),
            ServerMessage::Pong(_) => "pong".into(),
            ServerMessage::Error(e) => format!("error {} {}", e.id, e.errors),
            ServerMessage::Complete(id) => format!("done {id}"),
        })
    }

    fn result_template(id: String) -> Template {
        Template {
            prefix: format!("result {id} "),
            suffix: String::new(),
        }
    }
}

export!(EveryWorld);
