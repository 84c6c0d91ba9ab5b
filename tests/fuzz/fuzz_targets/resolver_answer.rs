//! A resolver's answer as JSON text, projected in place through a
//! subscription's selection (`Plan::execute_text`, what a component
//! resolver's answer goes through) beside the same text parsed into a
//! `Value` and projected the usual way. The input is `query \0 answer`.
//!
//! Checks: text that is not one JSON value is refused by `JsonText`
//! exactly when serde_json refuses it; the result is always JSON with
//! `data`; where the text parses into a `Value`, both results are the same
//! JSON (numbers compared as what they parse to: a `1.50` read in place
//! is `1.5` parsed).

#![no_main]


use fanwire_core::json::JsonText;
use fanwire_core::operation::prepare;
use fanwire_core::protocol::SubscribePayload;
use fanwire_core::Limits;
use fanwire_fuzz::shared_schema;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Some((query, answer)) = input.split_once('\0') else {
        return;
    };
    let request = SubscribePayload {
        query: query.to_owned(),
        operation_name: None,
        variables: Map::new(),
        extensions: Map::new(),
    };
    let Ok(prepared) = prepare(shared_schema(), &Limits::default(), &request) else {
        return;
    };
    let valid = serde_json::from_str::<&serde_json::value::RawValue>(answer).is_ok();
    let text = match JsonText::parse(answer.to_owned()) {
        Ok(text) => text,
        Err(_) => {
            assert!(!valid, "JsonText refused JSON: {answer:?}");
            return;
        }
    };
    assert!(valid, "JsonText took what is not JSON: {answer:?}");
    let in_place = prepared.plan.execute_text(&text, &[]);
    let in_place: Value = serde_json::from_slice(&in_place).expect("a result is JSON");
    assert!(in_place.get("data").is_some(), "{in_place}");
    if let Ok(parsed) = text.to_value() {
        let usual: Value =
            serde_json::from_slice(&prepared.plan.execute(&parsed)).expect("a result is JSON");
        assert_eq!(in_place, usual, "{query} on {answer}");
    }
});
