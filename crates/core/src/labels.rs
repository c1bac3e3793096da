//! Bounded metric label values.
//!
//! A label value taken from a request or a response creates one time series
//! per distinct value, for as long as the process lives: a client sending
//! junk model ids, or a server returning an unexpected error code, would
//! grow the metrics without bound. The crates of this workspace pass model
//! ids and error codes through these functions before using them as label
//! values:
//!
//! - [`model_label`]: a model id keeps its own label when it was
//!   [registered](register_models) (fallback chains register their
//!   targets) or when it is one of the first [`MODEL_LABEL_LIMIT`] distinct
//!   ids seen by the process; any other id is [`OTHER`].
//! - [`code_label`]: an error code the classifier knows (a `&'static str`
//!   in the [`Classification`]) keeps its label; a code copied from a
//!   response (an owned string) is [`OTHER`]; no code is `""`.
//!
//! The set of model labels is process-wide, like the metrics recorder, so
//! every layer agrees on which ids are `other`.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use crate::Classification;

/// The label value of a model id or an error code that is not kept.
pub const OTHER: &str = "other";

/// How many distinct, unregistered model ids get a label of their own.
pub const MODEL_LABEL_LIMIT: usize = 100;

struct Labels {
    registered: HashSet<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

static LABELS: RwLock<Option<Labels>> = RwLock::new(None);

/// Registers model ids that always keep their own label (configured
/// fallback targets, models a deployment names). They do not count towards
/// [`MODEL_LABEL_LIMIT`].
pub fn register_models<I, S>(ids: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut guard = LABELS.write().unwrap_or_else(|p| p.into_inner());
    let labels = guard.get_or_insert_with(|| Labels {
        registered: HashSet::new(),
        seen: HashSet::new(),
    });
    for id in ids {
        let id = id.as_ref();
        if !labels.registered.contains(id) {
            labels.registered.insert(Arc::from(id));
        }
    }
}

/// The label value for a model id: the id itself when registered or among
/// the first [`MODEL_LABEL_LIMIT`] distinct ids seen, [`OTHER`] otherwise.
///
/// ```
/// use tower_bedrock_core::labels::{model_label, register_models};
/// register_models(["eu.amazon.nova-pro-v1:0"]);
/// assert_eq!(&*model_label("eu.amazon.nova-pro-v1:0"), "eu.amazon.nova-pro-v1:0");
/// ```
pub fn model_label(id: &str) -> Arc<str> {
    {
        let guard = LABELS.read().unwrap_or_else(|p| p.into_inner());
        if let Some(labels) = guard.as_ref() {
            if let Some(known) = labels.registered.get(id).or_else(|| labels.seen.get(id)) {
                return Arc::clone(known);
            }
            if labels.seen.len() >= MODEL_LABEL_LIMIT {
                return Arc::from(OTHER);
            }
        }
    }
    let mut guard = LABELS.write().unwrap_or_else(|p| p.into_inner());
    let labels = guard.get_or_insert_with(|| Labels {
        registered: HashSet::new(),
        seen: HashSet::new(),
    });
    if let Some(known) = labels.registered.get(id).or_else(|| labels.seen.get(id)) {
        return Arc::clone(known);
    }
    if labels.seen.len() >= MODEL_LABEL_LIMIT {
        return Arc::from(OTHER);
    }
    let id: Arc<str> = Arc::from(id);
    labels.seen.insert(Arc::clone(&id));
    id
}

/// The label value for a classification's error code: a code the
/// classifier knows (borrowed, `'static`), [`OTHER`] for a code copied from
/// a response, `""` without a code.
pub fn code_label(c: &Classification) -> &'static str {
    match &c.code {
        Some(Cow::Borrowed(code)) => code,
        Some(Cow::Owned(_)) => OTHER,
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;

    #[test]
    fn model_labels_are_bounded_and_registered_ids_always_kept() {
        register_models(["configured-model"]);
        // Fill the set with junk ids (this test is the only one in this
        // crate that sees unregistered ids past the limit).
        let mut kept = 0;
        for i in 0..(MODEL_LABEL_LIMIT * 2) {
            let id = format!("junk-{i}");
            if &*model_label(&id) == id.as_str() {
                kept += 1;
            }
        }
        assert!(kept <= MODEL_LABEL_LIMIT, "{kept}");
        assert_eq!(&*model_label("junk-never-seen-before"), OTHER);
        assert_eq!(&*model_label("configured-model"), "configured-model");
        register_models(["registered-later"]);
        assert_eq!(&*model_label("registered-later"), "registered-later");
    }

    #[test]
    fn unknown_codes_fold_into_other() {
        let known = Classification::new(ErrorClass::Unknown).with_code("ThrottlingException");
        assert_eq!(code_label(&known), "ThrottlingException");
        let unknown =
            Classification::new(ErrorClass::Unknown).with_code(String::from("WeirdNewException"));
        assert_eq!(code_label(&unknown), OTHER);
        assert_eq!(code_label(&Classification::new(ErrorClass::Unknown)), "");
    }
}
