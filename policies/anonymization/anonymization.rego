# METADATA
# title: Anonymisation layers and thresholds
# description: |
#   Which anonymisation layers apply to a piece of data, whether it may stay pseudonymised,
#   and the re-identification threshold layer 3 (spe.anonymize.risk) must reach.
#   Input: {"tier": "public"|"statistics"|"permit", "release": bool (the output leaves the
#   SPE), "permit": {"id", "status", "pseudonymised_justified": bool} or null}.
#   Query `data.anonymization.decision`: {"allow", "reason", "layers" (in order, a subset of
#   "profile", "pseudonyms", "risk", "output_control"), "pseudonymised", "k_min", "max_risk",
#   "max_suppression", "qi_weights"}.
#   Anonymised by default (EHDS Art. 66): pseudonymised only under an active permit that
#   justifies it, and never for what leaves the SPE.
#   Rules are functions of their input so tests call them directly: the embedded engine
#   (regopy) cannot evaluate built-ins under `with input as`, and its sprintf quotes
#   strings returned by functions, so reasons are built with concat.
package anonymization

import rego.v1

tiers := {"public", "statistics", "permit"}

# Inside the SPE a class of 5 is the common floor; what is released must reach a prosecutor
# risk of 0.09, the figure quoted for public release of clinical data (ceil(1/0.09) = 12).
thresholds := {
	"inside": {"k_min": 5, "max_risk": 0.2, "text": "inside the SPE, k >= 5"},
	"release": {"k_min": 12, "max_risk": 0.09, "text": "released, risk <= 0.09 (k >= 12)"},
}

layer_order := ["profile", "pseudonyms", "risk", "output_control"]

# How layer 3 reaches the threshold (spe.anonymize.risk.reduce, Datafly): at most this share
# of the patients suppressed (past it Datafly generalises further: with 5% a site of 150
# patients loses age altogether, with 10% it keeps 10-year bands); and weights on each quasi-identifier's count of distinct
# values when choosing what to generalise next (under 1: kept detailed longer, as ARX's
# attribute weights). Age and sex are what most studies stratify by.
max_suppression := 0.1

qi_weights := {"age": 0.25, "sex": 0.5, "region": 1, "codes": 1}

# Anything not said to stay inside counts as released: the stricter side.
released(req) if not req.release == false

scope(req) := "release" if released(req) else := "inside"

active_permit(req) if {
	req.tier == "permit"
	is_object(req.permit)
	req.permit.status == "active"
}

pseudonymised(req) if {
	active_permit(req)
	req.permit.pseudonymised_justified == true
	not released(req)
}

# Direct identifiers go from everything derived from records.
applies(req, layer) if layer == "profile"

# Record-level extracts exist only under a permit; they need consistent UIDs and shifted
# dates even when the pseudonym itself is not kept.
applies(req, layer) if {
	layer == "pseudonyms"
	req.tier == "permit"
}

applies(req, layer) if layer == "risk"

applies(req, layer) if {
	layer == "output_control"
	released(req)
}

layers(req) := [layer | some layer in layer_order; applies(req, layer)]

permit_name(req) := req.permit.id if is_string(req.permit.id) else := "(no id)"

permit_status(req) := req.permit.status if is_string(req.permit.status) else := "no status"

refusal(req) := "denied: tier missing or not a string" if {
	not is_string(req.tier)
} else := concat("", ["denied: unknown tier ", req.tier]) if {
	not req.tier in tiers
} else := "denied: tier permit needs a data permit" if {
	req.tier == "permit"
	not is_object(req.permit)
} else := concat("", ["denied: permit ", permit_name(req), " is not active (", permit_status(req), ")"]) if {
	req.tier == "permit"
	not active_permit(req)
}

is_pseudonymised(req) := true if pseudonymised(req) else := false

mode(req) := "pseudonymised, justified by permit " if pseudonymised(req) else := "anonymised"

mode_text(req) := concat("", [mode(req), permit_name(req)]) if pseudonymised(req) else := mode(req)

# METADATA
# description: |
#   The decision object. A denial still carries the strictest settings, so a caller that
#   reads thresholds without checking `allow` errs on the safe side.
decide(req) := {
	"allow": false,
	"reason": refusal(req),
	"layers": layer_order,
	"pseudonymised": false,
	"k_min": thresholds.release.k_min,
	"max_risk": thresholds.release.max_risk,
	"max_suppression": max_suppression,
	"qi_weights": qi_weights,
} if {
	refusal(req)
} else := {
	"allow": true,
	"reason": concat("", ["allowed: tier ", req.tier, ", ", mode_text(req), ", ", thresholds[scope(req)].text]),
	"layers": layers(req),
	"pseudonymised": is_pseudonymised(req),
	"k_min": thresholds[scope(req)].k_min,
	"max_risk": thresholds[scope(req)].max_risk,
	"max_suppression": max_suppression,
	"qi_weights": qi_weights,
}

# Fails closed: an input no rule decides on (a missing field, say) is denied.
default decision := {"allow": false, "reason": "denied: anonymization.decision has no answer for this input"}

decision := decide(input)
