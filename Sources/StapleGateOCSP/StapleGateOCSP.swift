// The OCSP core: CertID, request, response, verification policy, HTTP fetch.
