//! Serde helpers for secrets: read as usual, always written as `***` so the effective
//! config can be printed without leaking them.

pub mod opt {
    use secrecy::SecretString;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
        Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
    }

    pub fn serialize<S: Serializer>(v: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(_) => s.serialize_str("***"),
            None => s.serialize_none(),
        }
    }
}
