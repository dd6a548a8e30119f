//! (in progress)
use super::Errs;
use serde_json::Value;
pub(crate) fn validate_ingress(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_ingress_class(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_network_policy(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_lease(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_endpoint_slice(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_hpa(_e: &mut Errs, _o: &Value, _v: &str) {}
pub(crate) fn validate_storage_class(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_pdb(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_role(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_role_binding(_e: &mut Errs, _o: &Value, _old: Option<&Value>, _ns: bool) {}
pub(crate) fn validate_events_event(_e: &mut Errs, _o: &Value) {}
