"""The user-facing API: LazyTensor, Vi/Vj/Pm and Genred."""
