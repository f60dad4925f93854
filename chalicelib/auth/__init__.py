"""Who is calling: Cognito tokens verified by the API's authorizer, and the rules of access."""
