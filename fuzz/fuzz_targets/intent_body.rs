//! The POST /agent/intents body (the shape issue 5 specifies) through the companion's parsers.
//! Property: see `kms_props::check_intent_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_intent_body(data);
});
