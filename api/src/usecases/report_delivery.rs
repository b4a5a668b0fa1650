//! Delivery reports. (being moved here from the handlers.)
