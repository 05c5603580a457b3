INSERT INTO cosine_vec (id, label, v) SELECT id, label, v FROM cosine_vec_stage WHERE id = (SELECT nextval('cosine_vec_stage_seq'));
