"""The IRIs the crates use: the profile, RO-Crate, and the Safe Haven Provenance terms
(https://w3id.org/shp) that say which phase an `AssessAction` records."""

FIVE_SAFES = "https://w3id.org/5s-crate/0.5"
#: Request crates written to the profile's previous release are read too.
FIVE_SAFES_ACCEPTED = (FIVE_SAFES, "https://w3id.org/5s-crate/0.4")
RO_CRATE = "https://w3id.org/ro/crate/1.3"
CONTEXT = "https://w3id.org/ro/crate/1.3/context"
PYTHON = "https://www.python.org/"
#: The profile's own terms, defined beside RO-Crate's context (which lacks them).
FIVE_SAFES_TERMS = {"executionType": "https://w3id.org/5s-crate/terms#executionType",
                    "disclosureCheckType":
                        "https://w3id.org/5s-crate/terms#disclosureCheckType",
                    "approvedBy": "https://w3id.org/5s-crate/terms#approvedBy"}
CONTEXTS = [CONTEXT, FIVE_SAFES_TERMS]
PYTHON_ENTITY = {"@id": PYTHON, "@type": "ComputerLanguage", "name": "Python",
                 "url": PYTHON, "version": "3"}
LICENCE = "https://w3id.org/5s-crate/0.5#licence-of-outputs"
LICENCE_ENTITY = {"@id": LICENCE, "@type": "CreativeWork",
                  "name": "The conditions of the data permit",
                  "description": "Outputs are used only under the conditions of the data "
                                 "permit they were computed under."}
SHA512 = "https://www.iana.org/assignments/named-information#sha-512"

SHP = "https://w3id.org/shp#"
CHECK_VALUE = SHP + "CheckValue"
VALIDATION = SHP + "ValidationCheck"
SIGN_OFF = SHP + "SignOff"
DISCLOSURE = SHP + "DisclosureCheck"
GENERATE_CHECK_VALUE = SHP + "GenerateCheckValue"

STATUS = "http://schema.org/{}ActionStatus"
POTENTIAL, ACTIVE, COMPLETED, FAILED = (STATUS.format(s) for s in
                                        ("Potential", "Active", "Completed", "Failed"))

#: The folder of a request crate's payload that holds the code, and of a result crate's
#: that holds the released outputs (the profile recommends `outputs/`).
CODE = "code/"
OUTPUTS = "outputs/"
