//! Recording an order signal. (being moved here from the handlers.)
