use std::fmt;

/// Capacity of a [`ModelName`] in bytes. Longer ids are truncated (they are
/// labels, not addresses).
pub const MODEL_NAME_CAPACITY: usize = 128;

/// A model id copied into a fixed inline buffer, so that every call can
/// keep its model id for labelling a possible error without allocating.
#[derive(Clone, Copy)]
pub struct ModelName {
    len: u8,
    buf: [u8; MODEL_NAME_CAPACITY],
}

impl ModelName {
    /// An empty name.
    pub const EMPTY: ModelName = ModelName {
        len: 0,
        buf: [0; MODEL_NAME_CAPACITY],
    };

    /// Copies `id`, truncated on a character boundary to the capacity.
    pub fn new(id: &str) -> Self {
        let mut end = id.len().min(MODEL_NAME_CAPACITY);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        let mut buf = [0; MODEL_NAME_CAPACITY];
        buf[..end].copy_from_slice(&id.as_bytes()[..end]);
        ModelName {
            len: end as u8,
            buf,
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only whole characters of a `&str` were copied.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or_default()
    }

    /// Whether the name is empty (no model id known).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for ModelName {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(ModelName::new("anthropic.x").as_str(), "anthropic.x");
        let long = "é".repeat(100); // 200 bytes
        let n = ModelName::new(&long);
        assert_eq!(n.as_str().len(), 128);
        assert!(n.as_str().chars().all(|c| c == 'é'));
        assert!(ModelName::new("").is_empty());
    }
}
