//! Test sends. (being moved here from the handlers.)
