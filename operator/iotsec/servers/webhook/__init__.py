"""The validating admission webhook: AdmissionReview in, the policy engine's decision out."""
