import Encore
print("encore")
