//! Restore links. (being moved here from the handlers.)
