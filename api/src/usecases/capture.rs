//! Capture and consent withdrawal. (being moved here from the handlers.)
