//! Erasure of a data subject. (being moved here from the handlers.)
