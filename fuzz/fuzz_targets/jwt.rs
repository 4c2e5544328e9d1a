//! Host-side jwt::parse and the TA's JwtHmacVerify on arbitrary tokens.
//! Property: see `kms_props::check_jwt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_props::check_jwt(data);
});
