//! Every request and response decoder of the host<->TA protocol.
//! Property: see `kms_props::check_proto_decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_proto_decode(data);
});
