/* placeholder: filled in by its issue */
typedef int nn_placeholder_;
