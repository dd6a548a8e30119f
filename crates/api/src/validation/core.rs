//! (in progress)
use super::Errs;
use serde_json::Value;
pub(crate) fn validate_service(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_config_map(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_secret(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_namespace(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_node(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_endpoints(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_pv(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_pvc(_e: &mut Errs, _o: &Value, _old: Option<&Value>) {}
pub(crate) fn validate_limit_range(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_resource_quota(_e: &mut Errs, _o: &Value) {}
pub(crate) fn validate_event(_e: &mut Errs, _o: &Value) {}
