//! What the REST API does with a POST: arbitrary bytes as the JSON body and
//! the route path. Parsing, the `target` check and key normalisation must
//! never panic, and a target that parses must print back as given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::Target;
use switchyard::routing::{RouteTable, normalize_key};

fuzz_target!(|input: (&[u8], &str)| {
    let (body, path) = input;
    let key = normalize_key(path).into_owned();
    let Ok(serde_json::Value::Object(data)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return;
    };
    let Some(serde_json::Value::String(target)) = data.get("target") else { return };
    let Ok(parsed) = Target::parse(target) else { return };
    assert_eq!(parsed.as_str(), target);
    let table = RouteTable::new();
    if table.insert(&key, parsed).is_ok() {
        assert!(table.lookup(&key).is_some(), "an added route must be found at its own key");
        let listed = serde_json::to_string(&data).unwrap();
        assert!(serde_json::from_str::<serde_json::Value>(&listed).is_ok());
    }
});
