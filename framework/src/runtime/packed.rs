//! The caches' texts compressed: LZ4 against a dictionary of earlier texts of the same kind.
//!
//! Most of a cached object's text is what every object of its kind repeats: the keys, the
//! labels' names, the conditions' messages, the annotations. Compressed alone, the text of a
//! finished WorkflowExecution keeps about half its size; compressed against the text of another
//! one, about an eighth (a PipelineRun as the child cache keeps it: 70 % alone, 17 % against
//! another). So each kind has a [`Packer`] whose dictionary is made of earlier texts of the
//! kind, and each packed text keeps the dictionary it was compressed against.
//!
//! # Guarantees
//! 1. [`Packed::unpack`] returns exactly the bytes that were packed; bytes that are not what
//!    [`Packer::pack`] wrote (a wrong length, a truncated block) unpack to nothing, never to
//!    something else, and never panic.
//! 2. A packed text keeps its dictionary alive (shared), so replacing a kind's dictionary later
//!    never changes what an earlier text unpacks to.
//! 3. Dictionaries are bounded: at most [`DICTIONARY`] bytes each, and a kind's dictionary is
//!    replaced at most once per [`REFRESH_EVERY`] texts (at once while it is empty), so a kind's
//!    cache keeps at most one dictionary per [`REFRESH_EVERY`] objects, whatever the objects.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex, PoisonError},
};

/// The most bytes of earlier texts a dictionary keeps: the texts of a few objects. Compressing
/// reads the whole dictionary each time (about a microsecond per 2 KiB).
pub(crate) const DICTIONARY: usize = 4096;

/// How many texts a dictionary compresses at least before a text it compresses badly replaces
/// it (and how many objects share each dictionary at least).
pub(crate) const REFRESH_EVERY: usize = 64;

/// A text compresses badly when more than this fraction of it is left (a text like those of the
/// dictionary keeps an eighth to a sixth).
const BAD: f64 = 1.0 / 3.0;

/// The texts of one kind, compressed against a dictionary of earlier texts of that kind.
#[derive(Default)]
pub(crate) struct Packer {
    learning: Mutex<Learning>,
}

/// A packer's dictionary and how many texts it compressed since it was made.
#[derive(Default)]
struct Learning {
    dictionary: Arc<Box<[u8]>>,
    packed: usize,
}

/// One packer per kind, for the whole process: a kind's objects share their dictionaries
/// whichever cache (or test) froze them.
static PACKERS: LazyLock<Mutex<HashMap<String, Arc<Packer>>>> = LazyLock::new(Mutex::default);

impl Packer {
    /// The packer of the kind `kind` of `api_version`.
    pub(crate) fn of(api_version: &str, kind: &str) -> Arc<Packer> {
        let name = format!("{api_version}/{kind}");
        let mut packers = PACKERS.lock().unwrap_or_else(PoisonError::into_inner);
        packers.entry(name).or_default().clone()
    }

    /// `text` as a cache keeps it: packed, or as it is when packing would not make it smaller.
    pub(crate) fn compact(&self, text: Vec<u8>) -> Compact {
        match self.pack(&text) {
            Some(packed) => Compact::Packed(packed),
            None => Compact::Plain(text.into_boxed_slice()),
        }
    }

    /// `text` compressed against this kind's dictionary; `None` when that is not smaller than
    /// `text` (or `text` is longer than 4 GiB, which no object is). A text that compresses badly
    /// may become (part of) the dictionary of the texts after it.
    pub(crate) fn pack(&self, text: &[u8]) -> Option<Packed> {
        u32::try_from(text.len()).ok()?;
        let dictionary = self.lock().dictionary.clone();
        let bytes = lz4_flex::block::compress_prepend_size_with_dict(text, &dictionary);
        let left = bytes.len() as f64 / text.len().max(1) as f64;
        let mut learning = self.lock();
        learning.packed += 1;
        if learning.dictionary.is_empty() || (left > BAD && learning.packed >= REFRESH_EVERY) {
            learning.dictionary = Arc::new(learned(&learning.dictionary, text));
            learning.packed = 0;
        }
        drop(learning);
        (bytes.len() < text.len()).then(|| Packed {
            dictionary,
            bytes: bytes.into_boxed_slice(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learning> {
        self.learning.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The next dictionary: the last [`DICTIONARY`] bytes of the current one followed by `text`
/// (LZ4 finds a match the sooner the nearer it is to the end of the dictionary).
fn learned(dictionary: &[u8], text: &[u8]) -> Box<[u8]> {
    let mut next = Vec::with_capacity(DICTIONARY);
    let from_text = text.len().min(DICTIONARY);
    let from_dictionary = (DICTIONARY - from_text).min(dictionary.len());
    next.extend_from_slice(&dictionary[dictionary.len() - from_dictionary..]);
    next.extend_from_slice(&text[text.len() - from_text..]);
    next.into_boxed_slice()
}

/// A text as a cache keeps it ([`Packer::compact`]).
#[derive(Clone, Debug)]
pub(crate) enum Compact {
    /// Compressed.
    Packed(Packed),
    /// As it is, when compressing did not make it smaller.
    Plain(Box<[u8]>),
}

impl Compact {
    /// The text; `None` (logged, with `name`) when packed bytes no longer unpack, which cannot
    /// happen to what [`Packer::compact`] wrote.
    pub(crate) fn text(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        match self {
            Compact::Plain(text) => Some(Cow::Borrowed(text)),
            Compact::Packed(packed) => {
                let text = packed.unpack();
                if text.is_none() {
                    tracing::error!(name, "a cached object does not decompress");
                }
                text.map(Cow::Owned)
            }
        }
    }
}

/// A text compressed by a [`Packer`]: its length (4 bytes, little-endian), the LZ4 block, and
/// the dictionary it was compressed against.
#[derive(Clone)]
pub(crate) struct Packed {
    dictionary: Arc<Box<[u8]>>,
    bytes: Box<[u8]>,
}

impl Packed {
    /// The text that was packed; `None` when the bytes are not what [`Packer::pack`] wrote.
    pub(crate) fn unpack(&self) -> Option<Vec<u8>> {
        let (length, compressed) = self.bytes.split_first_chunk::<4>()?;
        let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
        let text =
            lz4_flex::block::decompress_with_dict(compressed, length, &self.dictionary).ok()?;
        (text.len() == length).then_some(text)
    }

    /// How many bytes the compressed text takes (without its dictionary, which it shares).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("bytes", &self.bytes.len())
            .field("dictionary", &self.dictionary.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text of an object of a kind, the `i`-th of several alike.
    fn text(i: usize) -> String {
        format!(
            r#"{{"metadata":{{"name":"run-{i:05}","uid":"{:08x}-5b7a-4c3e-9d2f"}},"status":{{"conditions":[{{"type":"Succeeded","status":"True","reason":"Succeeded","message":"Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"}}],"startTime":"2026-12-02T07:{:02}:00Z"}}}}"#,
            i * 7919,
            i % 60
        )
    }

    /// Each text unpacks to itself, the dictionary learned from the first makes the others a
    /// fraction of their size, and bytes that are not a packed text unpack to nothing.
    #[test]
    fn packed_text_unpacks_to_itself_and_damage_is_refused() {
        let packer = Packer::default();
        let first = packer
            .pack(text(0).as_bytes())
            .expect("repetitive text shrinks");
        assert_eq!(first.unpack().as_deref(), Some(text(0).as_bytes()));
        let second = packer.pack(text(1).as_bytes()).expect("shrinks");
        assert_eq!(second.unpack().as_deref(), Some(text(1).as_bytes()));
        assert!(
            second.len() * 4 < text(1).len(),
            "against the first: {} of {} bytes left",
            second.len(),
            text(1).len()
        );
        assert!(
            second.len() < first.len() / 2,
            "the dictionary halves it at least"
        );
        assert!(packer.pack(b"{}").is_none(), "too short to shrink");
        let damaged = |bytes: Vec<u8>| Packed {
            dictionary: second.dictionary.clone(),
            bytes: bytes.into_boxed_slice(),
        };
        let truncated = damaged(second.bytes[..second.bytes.len() - 3].to_vec());
        assert_eq!(truncated.unpack(), None, "truncated");
        let mut longer = second.bytes.to_vec();
        longer[0] += 1;
        assert_eq!(damaged(longer).unpack(), None, "another length");
        assert_eq!(damaged(vec![1, 2]).unpack(), None, "no length");
        let other_dictionary = Packed {
            dictionary: Arc::default(),
            bytes: second.bytes.clone(),
        };
        assert_ne!(
            other_dictionary.unpack().as_deref(),
            Some(text(1).as_bytes()),
            "without its dictionary"
        );
    }

    /// A dictionary is replaced only by a text it compresses badly, at most once per
    /// `REFRESH_EVERY` texts, stays within `DICTIONARY` bytes, and earlier texts keep theirs.
    #[test]
    fn dictionaries_are_replaced_seldom_and_stay_bounded() {
        let packer = Packer::default();
        let packed: Vec<Packed> = (0..REFRESH_EVERY * 3)
            .filter_map(|i| packer.pack(text(i).as_bytes()))
            .collect();
        let dictionaries = |packed: &[Packed]| {
            let mut seen: Vec<*const Box<[u8]>> =
                packed.iter().map(|p| Arc::as_ptr(&p.dictionary)).collect();
            seen.dedup();
            seen.len()
        };
        assert_eq!(
            dictionaries(&packed),
            2,
            "the empty one, then the first text: alike texts compress well"
        );
        // Texts of another shape, each unlike the last: one new dictionary per REFRESH_EVERY.
        let unlike: Vec<Vec<u8>> = (0..REFRESH_EVERY * 4)
            .map(|i| {
                (0..600u32)
                    .map(|j| {
                        (j.wrapping_mul(2_654_435_761).wrapping_add(i as u32 * 97) >> 13) as u8
                    })
                    .map(|b| b'a' + b % 26)
                    .collect()
            })
            .collect();
        let before = Arc::as_ptr(&packer.lock().dictionary);
        let mut replaced = 0;
        let mut last = before;
        for text in &unlike {
            packer.pack(text);
            let now = Arc::as_ptr(&packer.lock().dictionary);
            if now != last {
                replaced += 1;
                last = now;
            }
        }
        assert!((3..=4).contains(&replaced), "replaced {replaced} times");
        assert!(packer.lock().dictionary.len() <= DICTIONARY);
        for (i, p) in packed.iter().enumerate() {
            assert_eq!(p.unpack().as_deref(), Some(text(i).as_bytes()));
        }
        assert!(Arc::ptr_eq(&Packer::of("a", "b"), &Packer::of("a", "b")));
        assert!(!Arc::ptr_eq(&Packer::of("a", "b"), &Packer::of("a", "c")));
    }
}
