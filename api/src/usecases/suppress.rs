//! The suppression list. (being moved here from the handlers.)
