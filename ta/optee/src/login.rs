//! Which normal-world client may open a session: the login check of `open_session`.
//!
//! On OP-TEE every session carries the client's identity, the GlobalPlatform property
//! `gpd.client.identity` of `TEE_PROPSET_CURRENT_CLIENT`: a login method and a UUID. For a
//! Linux client the *kernel* fills both in (`tee_session_calc_client_uuid` in
//! `drivers/tee/tee_core.c`), so a process cannot claim another's:
//!
//! | login (`TEEC_LOGIN_*`) | UUID the TA sees |
//! |---|---|
//! | `PUBLIC` (0) | nil |
//! | `USER` (1) | UUIDv5 in the namespace [`TEE_CLIENT_UUID_NS`] of the name `"uid=<euid in lowercase hex>"` |
//! | `GROUP` (2) | the same of `"gid=<gid in lowercase hex>"`; the kernel refuses the session (`EPERM`) unless the process is in that group (`in_egroup_p`) |
//!
//! (UUIDv5: the first 16 bytes of SHA-1(namespace ‖ name), with version 5 and the RFC 4122
//! variant set. The ids are the kernel's, i.e. as seen from the initial user namespace.
//! The application logins have no UUID in mainline Linux; the kernel refuses them, and user
//! space cannot claim the REE-kernel logins.) OP-TEE OS copies login and UUID into the session's
//! `TEE_Identity` unchanged (`get_open_session_meta` in `core/tee/entry_std.c`).
//!
//! The TA admits exactly one identity, fixed when it is built: `KMS_TA_CLIENT_LOGIN` =
//! `user:<uid>` (the companion's service account) or `group:<gid>` (a group whose members
//! may use the TA), decimal ids. Every other session open is refused with
//! `TEE_ERROR_ACCESS_DENIED`, before any command can run. A real TA build without the variable
//! does not compile; a type-check build (`optee-doc`) without it admits nobody.
//!
//! This gates the TA by OS account. It does not protect against `root` on the host, which can
//! take any uid or group (and load its own kernel).

use sha1::{Digest, Sha1};

/// `TEE_LOGIN_PUBLIC`.
pub const TEE_LOGIN_PUBLIC: u32 = 0;
/// `TEE_LOGIN_USER`.
pub const TEE_LOGIN_USER: u32 = 1;
/// `TEE_LOGIN_GROUP`.
pub const TEE_LOGIN_GROUP: u32 = 2;

/// The name space of the client UUIDs Linux derives (`tee_client_uuid_ns` in
/// `drivers/tee/tee_core.c`: `58ac9ca0-2086-4683-a1b8-ec4bc08e01b6`).
pub const TEE_CLIENT_UUID_NS: [u8; 16] = [
    0x58, 0xac, 0x9c, 0xa0, 0x20, 0x86, 0x46, 0x83, 0xa1, 0xb8, 0xec, 0x4b, 0xc0, 0x8e, 0x01, 0xb6,
];

/// The build setting naming the admitted client (read at compile time).
pub const CLIENT_LOGIN_VAR: &str = "KMS_TA_CLIENT_LOGIN";

/// The one client identity the TA admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientLogin {
    /// `TEE_LOGIN_USER` of the process with this effective uid.
    User(u32),
    /// `TEE_LOGIN_GROUP` of this group (the process must be a member).
    Group(u32),
}

/// Why `KMS_TA_CLIENT_LOGIN` does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginConfigError {
    /// Neither `user:` nor `group:`.
    UnknownMethod,
    /// The id is not a decimal `u32` below `u32::MAX` (`(uid_t)-1` is no id).
    BadId,
}

impl ClientLogin {
    /// Parse `user:<uid>` or `group:<gid>` (decimal). A `const fn`, so that the TA's setting is
    /// checked when the TA is compiled.
    pub const fn parse(s: &str) -> Result<Self, LoginConfigError> {
        let b = s.as_bytes();
        let (is_user, start) = if starts_with(b, b"user:") {
            (true, 5)
        } else if starts_with(b, b"group:") {
            (false, 6)
        } else {
            return Err(LoginConfigError::UnknownMethod);
        };
        if start == b.len() {
            return Err(LoginConfigError::BadId);
        }
        let mut id: u64 = 0;
        let mut i = start;
        while i < b.len() {
            let c = b[i];
            if !c.is_ascii_digit() || (i == start && c == b'0' && b.len() > start + 1) {
                return Err(LoginConfigError::BadId);
            }
            id = id * 10 + (c - b'0') as u64;
            if id >= u32::MAX as u64 {
                return Err(LoginConfigError::BadId);
            }
            i += 1;
        }
        let id = id as u32;
        Ok(if is_user {
            ClientLogin::User(id)
        } else {
            ClientLogin::Group(id)
        })
    }

    /// The `TEE_LOGIN_*` method.
    pub const fn login(&self) -> u32 {
        match self {
            ClientLogin::User(_) => TEE_LOGIN_USER,
            ClientLogin::Group(_) => TEE_LOGIN_GROUP,
        }
    }

    /// The client UUID Linux derives for this identity (see the module docs), in RFC 4122 byte
    /// order (as printed).
    pub fn client_uuid(&self) -> [u8; 16] {
        let (tag, id) = match self {
            ClientLogin::User(uid) => ("uid=", *uid),
            ClientLogin::Group(gid) => ("gid=", *gid),
        };
        // `%x` of the id: lowercase hex without leading zeros.
        let mut digits = [0u8; 8];
        let mut n = 0;
        let mut v = id;
        loop {
            digits[n] = b"0123456789abcdef"[(v & 0xf) as usize];
            n += 1;
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        digits[..n].reverse();
        let mut h = Sha1::new();
        h.update(TEE_CLIENT_UUID_NS);
        h.update(tag.as_bytes());
        h.update(&digits[..n]);
        let hash = h.finalize();
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&hash[..16]);
        uuid[6] = (uuid[6] & 0x0f) | 0x50;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        uuid
    }
}

const fn starts_with(b: &[u8], prefix: &[u8]) -> bool {
    if b.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if b[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The client identity admitted by this build: `KMS_TA_CLIENT_LOGIN` at compile time, checked
/// then (a malformed value does not compile). `None`: not set, so no client is admitted.
pub const CLIENT_LOGIN: Option<ClientLogin> = match option_env!("KMS_TA_CLIENT_LOGIN") {
    None => None,
    Some(s) => match ClientLogin::parse(s) {
        Ok(l) => Some(l),
        Err(_) => panic!(
            "KMS_TA_CLIENT_LOGIN must be `user:<uid>` or `group:<gid>` (decimal), e.g. user:990"
        ),
    },
};

// A real OP-TEE build must say whom it admits (the type-check build may not).
#[cfg(all(feature = "optee", not(feature = "optee-doc")))]
const _: () = assert!(
    CLIENT_LOGIN.is_some(),
    "building the OP-TEE TA needs KMS_TA_CLIENT_LOGIN=user:<uid> or group:<gid>: the only \
     normal-world identity allowed to open sessions (see ta/optee/README.md)"
);

/// A session's client, from `gpd.client.identity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// `TEE_Identity.login`.
    pub login: u32,
    /// `TEE_Identity.uuid`, in RFC 4122 byte order.
    pub uuid: [u8; 16],
}

/// Why a session open was refused (the TA answers `TEE_ERROR_ACCESS_DENIED` for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This build admits nobody (`KMS_TA_CLIENT_LOGIN` was not set).
    NotConfigured,
    /// Another login method than the admitted one (e.g. `PUBLIC`, or a TA client).
    WrongMethod {
        /// The admitted method.
        expected: u32,
        /// The client's.
        got: u32,
    },
    /// The right method, another user or group.
    WrongIdentity,
}

/// The decision of `open_session`: admit `client` only if it is `admitted`.
pub fn admit(admitted: Option<ClientLogin>, client: &Client) -> Result<(), Refusal> {
    let admitted = admitted.ok_or(Refusal::NotConfigured)?;
    if client.login != admitted.login() {
        return Err(Refusal::WrongMethod {
            expected: admitted.login(),
            got: client.login,
        });
    }
    if client.uuid != admitted.client_uuid() {
        return Err(Refusal::WrongIdentity);
    }
    Ok(())
}

/// Parse a UUID in its canonical text form (`8-4-4-4-12` hex digits, either case), as
/// `optee_utee::Uuid` prints it; `None` for anything else.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let b = s.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < 36 {
        if matches!(i, 8 | 13 | 18 | 23) {
            if b[i] != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = hex_val(b[i])?;
        let lo = hex_val(b[i + 1])?;
        out[n] = (hi << 4) | lo;
        n += 1;
        i += 2;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(s: &str) -> [u8; 16] {
        parse_uuid(s).unwrap()
    }

    /// The UUIDs Linux derives, computed independently (Python:
    /// `uuid.uuid5(uuid.UUID("58ac9ca0-2086-4683-a1b8-ec4bc08e01b6"), "uid=3e8")`, ...).
    #[test]
    fn client_uuids_match_the_kernels_derivation() {
        assert_eq!(
            ClientLogin::User(0).client_uuid(),
            uuid("ef0180a3-13f3-5d1c-b7f5-888c0e21059a")
        );
        assert_eq!(
            ClientLogin::User(1000).client_uuid(),
            uuid("fc34275c-d8dd-5ba7-968b-504718363b87")
        );
        assert_eq!(
            ClientLogin::Group(995).client_uuid(),
            uuid("9783e618-24ae-5ff8-8c32-7e3ca9232466")
        );
        assert_ne!(
            ClientLogin::User(995).client_uuid(),
            ClientLogin::Group(995).client_uuid()
        );
    }

    #[test]
    fn the_setting_parses_strictly() {
        assert_eq!(ClientLogin::parse("user:990"), Ok(ClientLogin::User(990)));
        assert_eq!(ClientLogin::parse("user:0"), Ok(ClientLogin::User(0)));
        assert_eq!(ClientLogin::parse("group:995"), Ok(ClientLogin::Group(995)));
        assert_eq!(
            ClientLogin::parse("user:4294967294"),
            Ok(ClientLogin::User(u32::MAX - 1))
        );
        for bad in [
            "user:",
            "user:-1",
            "user:+5",
            "user:007",
            "user: 5",
            "user:5 ",
            "user:0x10",
            "user:4294967295",
            "user:99999999999999999999",
        ] {
            assert_eq!(
                ClientLogin::parse(bad),
                Err(LoginConfigError::BadId),
                "{bad}"
            );
        }
        for bad in ["", "public", "User:5", "uid:5", "app:5", "5"] {
            assert_eq!(
                ClientLogin::parse(bad),
                Err(LoginConfigError::UnknownMethod),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_the_admitted_identity_opens_a_session() {
        let service = ClientLogin::User(990);
        let me = Client {
            login: TEE_LOGIN_USER,
            uuid: service.client_uuid(),
        };
        assert_eq!(admit(Some(service), &me), Ok(()));
        // Another user.
        let other = Client {
            login: TEE_LOGIN_USER,
            uuid: ClientLogin::User(991).client_uuid(),
        };
        assert_eq!(admit(Some(service), &other), Err(Refusal::WrongIdentity));
        // root is just another user to the check.
        let root = Client {
            login: TEE_LOGIN_USER,
            uuid: ClientLogin::User(0).client_uuid(),
        };
        assert_eq!(admit(Some(service), &root), Err(Refusal::WrongIdentity));
        // Public login (nil UUID), a group login with the uid's UUID, a TA client, a kernel
        // client: another method.
        for (login, id) in [
            (TEE_LOGIN_PUBLIC, [0; 16]),
            (TEE_LOGIN_GROUP, service.client_uuid()),
            (0xF000_0000, service.client_uuid()),
            (0x8000_0000, [0; 16]),
        ] {
            assert_eq!(
                admit(Some(service), &Client { login, uuid: id }),
                Err(Refusal::WrongMethod {
                    expected: TEE_LOGIN_USER,
                    got: login
                })
            );
        }
        // A build without the setting admits nobody, not even the service.
        assert_eq!(admit(None, &me), Err(Refusal::NotConfigured));
    }

    #[test]
    fn a_group_setting_admits_that_group_only() {
        let group = ClientLogin::Group(995);
        let member = Client {
            login: TEE_LOGIN_GROUP,
            uuid: group.client_uuid(),
        };
        assert_eq!(admit(Some(group), &member), Ok(()));
        // The user whose uid equals the gid is not the group.
        let same_number = Client {
            login: TEE_LOGIN_USER,
            uuid: ClientLogin::User(995).client_uuid(),
        };
        assert_eq!(
            admit(Some(group), &same_number),
            Err(Refusal::WrongMethod {
                expected: TEE_LOGIN_GROUP,
                got: TEE_LOGIN_USER
            })
        );
        let other_group = Client {
            login: TEE_LOGIN_GROUP,
            uuid: ClientLogin::Group(996).client_uuid(),
        };
        assert_eq!(
            admit(Some(group), &other_group),
            Err(Refusal::WrongIdentity)
        );
    }

    #[test]
    fn uuids_parse_in_their_printed_form_only() {
        assert_eq!(
            uuid("6e4a3c1f-2b7d-4d9e-9a51-8c0f3e7b2d64")[..4],
            [0x6e, 0x4a, 0x3c, 0x1f]
        );
        assert_eq!(
            parse_uuid("6E4A3C1F-2B7D-4D9E-9A51-8C0F3E7B2D64"),
            parse_uuid("6e4a3c1f-2b7d-4d9e-9a51-8c0f3e7b2d64")
        );
        for bad in [
            "",
            "6e4a3c1f2b7d4d9e9a518c0f3e7b2d64",
            "6e4a3c1f-2b7d-4d9e-9a51-8c0f3e7b2d6",
            "6e4a3c1f-2b7d-4d9e-9a51-8c0f3e7b2d6g",
            "6e4a3c1f+2b7d-4d9e-9a51-8c0f3e7b2d64",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
    }
}
