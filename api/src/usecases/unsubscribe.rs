//! Unsubscribe. (being moved here from the handlers.)
