//! The infohashes this mesh uses in the DHT: the current and previous hourly network ids
//! (crypto-and-wire §2.1). Deriving them needs the secret, so [`HourlyIds`] holds it and never
//! shows it. Pure: the time is a parameter.

use std::fmt;

use crate::config::MeshSecret;
use crate::crypto::hourly_network_id;

/// The secret, kept only to derive the hourly ids. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct HourlyIds {
    secret: MeshSecret,
}

impl HourlyIds {
    /// Ids of the mesh with this secret.
    pub fn new(secret: MeshSecret) -> Self {
        Self { secret }
    }

    /// `[current, previous]` at `unix_seconds`: the ids of this hour and of the hour before.
    /// They always differ, so both are announced and queried (a node whose clock is up to an
    /// hour behind still meets us).
    pub fn at(&self, unix_seconds: i64) -> [[u8; 20]; 2] {
        [
            hourly_network_id(&self.secret, unix_seconds),
            hourly_network_id(&self.secret, unix_seconds.saturating_sub(3600)),
        ]
    }
}

impl fmt::Debug for HourlyIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HourlyIds(<secret redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretOrigin;
    use crate::crypto::derive::hex;

    #[test]
    fn current_and_previous_hour_ids_match_the_reference_vectors() {
        let secret = "test-secret-0123456789";
        let ids = HourlyIds::new(MeshSecret::parse(secret, SecretOrigin::Literal).unwrap());
        #[rustfmt::skip]
        let table = [
            (1_800_000_000, "bfb6556de2f5f9242019e2905a55dab9c784b176", "7aa5e1b3be75a7e5420bdbb025d12ac7d72dfe29"),
            (1_800_003_599, "bfb6556de2f5f9242019e2905a55dab9c784b176", "7aa5e1b3be75a7e5420bdbb025d12ac7d72dfe29"),
            (1_800_003_600, "88e32be9901e50af1930985a61dc538f4076a1ba", "bfb6556de2f5f9242019e2905a55dab9c784b176"),
        ];
        for (t, current, previous) in table {
            let [c, p] = ids.at(t);
            assert_eq!(
                (hex(&c), hex(&p)),
                (current.into(), previous.into()),
                "t={t}"
            );
        }
        let debug = format!("{ids:?}");
        assert!(!debug.contains(secret), "{debug}");
    }
}
