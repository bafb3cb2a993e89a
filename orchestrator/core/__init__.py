"""The pure decision core: definitions, saga state and `decide()`. No I/O imports here."""
